"""The empty-handler ceiling: a grpc.aio TaskService that answers at once with a constant.

`python -m bench.ceiling` serves it on a free loopback port, in its own process and
on the gateway's event loop (uvloop where installed), so that the same client code
measures the fastest a Python gRPC server answers Submit and GetStatus on this
machine. It never touches Redis or Celery.
"""

import asyncio
import contextlib
import logging
import re
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc

from scripts.stack import ManagedProcess
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

CEILING_TASK_ID = str(uuid.UUID(int=1))
_LISTENING = re.compile(r"ceiling listening on (127\.0\.0\.1:\d+)")
_SUBMITTED = pb.SubmitResponse(task_id=CEILING_TASK_ID)
_STATUS = pb.GetStatusResponse(
    task_id=CEILING_TASK_ID, state=pb.TASK_STATE_SUCCESS, state_name="SUCCESS", task="tasks.add"
)


class CeilingTaskService(pb_grpc.TaskServiceServicer):
    """Submit and GetStatus answer a constant, the other RPCs UNIMPLEMENTED."""

    async def Submit(  # noqa: N802 (the RPC's name)
        self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SubmitResponse:
        return _SUBMITTED

    async def GetStatus(  # noqa: N802 (the RPC's name)
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetStatusResponse:
        return _STATUS


async def serve() -> None:
    """Serve on a free loopback port until the process is stopped."""
    server = grpc.aio.server()
    # The stubs type every RPC as abstract; at run time the base answers UNIMPLEMENTED.
    pb_grpc.add_TaskServiceServicer_to_server(CeilingTaskService(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    logger.info("ceiling listening on 127.0.0.1:%s", port)
    await server.wait_for_termination()


def start_ceiling(env: dict[str, str], log_dir: Path) -> tuple[ManagedProcess, str]:
    """Start `python -m bench.ceiling`; the process and the address it listens on."""
    process = ManagedProcess("ceiling", [sys.executable, "-m", "bench.ceiling"], env, log_dir)
    return process, process.started(_LISTENING).group(1)


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop where installed, as the gateway runs (server/__main__.py)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    with contextlib.suppress(KeyboardInterrupt):
        _runner()(serve())
