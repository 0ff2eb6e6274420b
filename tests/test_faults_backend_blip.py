"""Waits in flight ride out a short outage of the result backend and return the result.

The stack is private to this module: a broker redis-server that stays up, a
result-backend redis-server with appendonly that the test SIGKILLs and starts
again on the same port, a gateway, and a worker started only once the backend
is back (the tasks wait in a queue until then).
"""

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import fault_env, managed, poll, seconds, subscribed

QUEUE = "after-the-blip"  # no worker consumes it until the backend is back
WAITS = 20
WAIT_SECONDS = 15.0
DEADLINE_SECONDS = 20.0
OUTAGE_SECONDS = 3.0  # how long the backend stays down: the fault itself, not a wait


def _submit(stub: pb_grpc.TaskServiceStub, count: int) -> list[str]:
    """tasks.add(i, i) for each i, queued for a worker that comes later; their ids."""
    task_ids = []
    for i in range(count):
        request = pb.SubmitRequest(
            task="tasks.add", args_json=json.dumps([i, i]), options=pb.SubmitOptions(queue=QUEUE)
        )
        task_ids.append(stub.Submit(request, timeout=10).task_id)
    return task_ids


def _watch(stub: pb_grpc.TaskServiceStub, task_id: str) -> "Future[list[str]]":
    """Follow the task with WatchStatus in a thread; the state names it streamed."""
    streamed: Future[list[str]] = Future()

    def follow() -> None:
        request = pb.WatchStatusRequest(task_id=task_id)
        try:
            states = [
                message.status.state_name
                for message in stub.WatchStatus(request, timeout=DEADLINE_SECONDS)
            ]
        except grpc.RpcError as exc:
            streamed.set_exception(exc)
        else:
            streamed.set_result(states)

    threading.Thread(target=follow, daemon=True).start()
    return streamed


@pytest.fixture
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this test's processes keep their logs and Redis files."""
    return tmp_path_factory.mktemp("faults-backend-blip")


def _restart(backend: RedisServer, log_dir: Path) -> RedisServer:
    """SIGKILL the backend, keep it down OUTAGE_SECONDS, start it on the same port."""
    backend.signal(signal.SIGKILL)
    backend.stop()
    time.sleep(OUTAGE_SECONDS)
    return RedisServer(log_dir, port=backend.port, appendonly=True)


@pytest.fixture
def backends(log_dir: Path) -> Iterator[list[RedisServer]]:
    """The result backend (appendonly); the test appends the restarted one."""
    started = [RedisServer(log_dir, appendonly=True)]
    yield started
    for backend in started:
        backend.stop()


def test_waits_in_flight_ride_out_a_backend_restart(
    log_dir: Path, backends: list[RedisServer]
) -> None:
    """Checks that waits survive a lost result subscription (server/outage.py, watcher.py).

    WAITS GetResult calls (wait 15 s, deadline 20 s) and a WatchStatus stream
    wait on tasks queued for a worker that does not exist yet. The backend is
    SIGKILLed, stays down 3 s, and starts again on its port with its data
    (appendonly). Then a worker runs the tasks: every wait returns its task's
    result and the stream ends with SUCCESS. Before this change every one of
    them ended UNAVAILABLE the moment the backend went away, although 12 s of
    its wait remained.
    """
    with (
        managed(RedisServer(log_dir)) as broker,
        managed(Gateway(fault_env(broker.url, backends[0].url), log_dir)) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        stub = pb_grpc.TaskServiceStub(channel)
        task_ids = _submit(stub, WAITS + 1)
        waiting = [
            stub.GetResult.future(
                pb.GetResultRequest(task_id=task_id, wait=seconds(WAIT_SECONDS)),
                timeout=DEADLINE_SECONDS,
            )
            for task_id in task_ids[:WAITS]
        ]
        streamed = _watch(stub, task_ids[WAITS])
        with backends[0].client() as client:
            poll(lambda: all(subscribed(client, task_id) for task_id in task_ids), "all wait")

        backends.append(_restart(backends[0], log_dir))
        with managed(start_worker(fault_env(broker.url, backends[-1].url), log_dir, queues=QUEUE)):
            replies = [call.result(timeout=DEADLINE_SECONDS) for call in waiting]
            states = streamed.result(timeout=DEADLINE_SECONDS)

    assert [reply.result_json for reply in replies] == [str(2 * i) for i in range(WAITS)]
    assert all(reply.ready and reply.state == pb.TASK_STATE_SUCCESS for reply in replies)
    assert states[0] == "PENDING", states
    assert states[-1] == "SUCCESS", states
