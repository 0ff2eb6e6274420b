"""Redis restarted with append-only persistence while tasks wait: none is lost.

The stack is private to this module: one redis-server (broker and result
backend) with `appendonly yes` on a fixed port, restarted in the same
directory, and a gateway that stays up throughout; the worker starts only
after the restart.
"""

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, free_port, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import (
    await_result,
    fault_env,
    managed,
    outcome,
    poll,
    request,
    seconds,
    submit,
)

QUEUED = 8
DELAYED = 2


@dataclass
class Stack:
    """Redis can be replaced (`servers[-1]` is the current one); the gateway stays up."""

    servers: list[RedisServer]
    env: dict[str, str]
    log_dir: Path
    stub: pb_grpc.TaskServiceStub

    @property
    def redis(self) -> RedisServer:
        """The current redis-server."""
        return self.servers[-1]

    def restart_redis(self) -> int:
        """SIGTERM Redis (it flushes its append-only file), start it again; the exit code."""
        code = self.redis.stop()
        self.servers.append(RedisServer(self.log_dir, port=self.redis.port, appendonly=True))
        return code


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An append-only Redis on a fixed port and a gateway; no worker yet."""
    log_dir = tmp_path_factory.mktemp("faults-persistence")
    servers: list[RedisServer] = []
    with ExitStack() as processes:
        processes.callback(lambda: [server.stop() for server in servers])
        servers.append(RedisServer(log_dir, port=free_port(), appendonly=True))
        env = fault_env(servers[0].url, servers[0].url)
        gateway = processes.enter_context(managed(Gateway(env, log_dir)))
        channel = processes.enter_context(grpc.insecure_channel(gateway.address))
        yield Stack(servers, env, log_dir, pb_grpc.TaskServiceStub(channel))


def _answers(stack: Stack, task_id: str) -> bool:
    ask = pb.GetStatusRequest(task_id=task_id)
    return outcome(lambda: stack.stub.GetStatus(ask, timeout=5)).code == grpc.StatusCode.OK


def test_tasks_queued_before_a_redis_restart_all_complete(stack: Stack) -> None:
    """Checks Redis's append-only persistence of the broker's queue and the gateway's records.

    Eight tasks are acknowledged (two with a countdown) while no worker runs, so
    they sit in the broker's list. Redis is stopped with SIGTERM, which makes
    it flush the append-only file, and a new redis-server starts on the same
    port and directory. The gateway reconnects by itself; a worker started
    afterwards runs every task with the right result, and the gateway still
    knows every id (its dispatch records came back too). Without
    `appendonly` the new Redis starts empty: the queue is gone, nothing
    runs, and GetResult says NOT_FOUND.
    """
    expected: dict[str, str] = {}
    for number in range(QUEUED):
        submission = request("tasks.add", number, 1000)
        if number < DELAYED:
            submission.options.countdown.CopyFrom(seconds(1))
        expected[stack.stub.Submit(submission, timeout=10).task_id] = str(number + 1000)
    with stack.redis.client() as client:
        assert client.llen("celery") == QUEUED

    assert stack.restart_redis() == 0
    with stack.redis.client() as client:
        assert client.llen("celery") == QUEUED, "the queue did not survive the restart"
    # The first call after a restart may fail once (see the xfail below): let it pass.
    poll(lambda: _answers(stack, next(iter(expected))), "the gateway answers again", 10)

    with managed(start_worker(stack.env, stack.log_dir)):
        for task_id, result_json in expected.items():
            result = await_result(stack.stub, task_id, timeout=30)
            assert (pb.TaskState.Name(result.state), result.result_json) == (
                "TASK_STATE_SUCCESS",
                result_json,
            )


def test_the_first_calls_after_a_redis_restart_succeed(stack: Stack) -> None:
    """Checks that the gateway's pooled Redis connections survive a Redis restart.

    The gateway has used its connections; Redis restarts (append-only, so
    nothing is lost) and answers PING. The next Submit (which writes a
    dispatch record in the backend) and the next GetStatus must succeed:
    UNAVAILABLE means "cannot be reached", and Redis can be. A client that
    does not retry UNAVAILABLE would lose its Submit. Without a retry (or a
    check) on a pooled connection, the first command on each stale
    connection fails.
    """
    task_id = submit(stack.stub, "tasks.add", 1, 2)
    assert _answers(stack, task_id)
    assert stack.restart_redis() == 0
    submitted = outcome(lambda: stack.stub.Submit(request("tasks.add", 2, 3), timeout=5))
    assert submitted.code == grpc.StatusCode.OK, submitted
    status = outcome(lambda: stack.stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=5))
    assert status.code == grpc.StatusCode.OK, status
