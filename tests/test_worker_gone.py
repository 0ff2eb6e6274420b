"""A task whose whole worker died is reported PENDING (queued again), not STARTED for ever.

The stack is private to this module: a redis-server, a gateway that asks the
workers every REFRESH_SECONDS, a worker that the test kills whole and a second
worker, alive throughout, on another queue (so the task cannot move to it).
The broker keeps the default visibility timeout (an hour): the killed task's
message is not given back during the test, so PENDING is what a caller sees.
"""

import threading
import time
from concurrent.futures import Future

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import fault_env, managed, poll, run_pids, running, submit, unique

REFRESH_SECONDS = 1.0  # TASKGATE_WORKERS_REFRESH for this gateway
REPLY_SECONDS = 1.0  # how long the registry waits for the workers' answers
HOLD_SECONDS = 120  # the task runs far longer than the test


def _status(stub: pb_grpc.TaskServiceStub, task_id: str) -> pb.GetStatusResponse:
    response: pb.GetStatusResponse = stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=5)
    return response


def _checked_at(stub: pb_grpc.TaskServiceStub) -> float:
    """When the gateway last heard from the workers (ListTasks), in seconds."""
    return stub.ListTasks(pb.ListTasksRequest(), timeout=5).workers_checked_at.ToNanoseconds() / 1e9


def _two_refreshes(stub: pb_grpc.TaskServiceStub) -> None:
    """Wait until the gateway has asked the workers twice more."""
    first = _checked_at(stub)
    poll(lambda: _checked_at(stub) > first, "a refresh")
    second = _checked_at(stub)
    poll(lambda: _checked_at(stub) > second, "another refresh")


def _stream_states(stub: pb_grpc.TaskServiceStub, task_id: str) -> "Future[list[str]]":
    """WatchStatus in a thread, until PENDING follows STARTED; the states streamed."""
    streamed: Future[list[str]] = Future()

    def follow() -> None:
        states: list[str] = []
        try:
            for message in stub.WatchStatus(pb.WatchStatusRequest(task_id=task_id), timeout=30):
                states.append(message.status.state_name)
                if states[-2:] == ["STARTED", "PENDING"]:
                    break
        except grpc.RpcError as exc:
            streamed.set_exception(exc)
            return
        streamed.set_result(states)

    threading.Thread(target=follow, daemon=True).start()
    return streamed


def test_a_task_on_a_killed_worker_is_reported_pending(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Checks `Gateway._as_reported` and `WorkerRegistry.worker_gone`.

    A task runs on worker A (STARTED, worker A), and stays STARTED over two
    refreshes of the gateway's view of the workers: a live worker is never
    taken for gone. Then A's main process is SIGKILLed (its pool dies with
    it) while worker B lives. GetStatus stops reporting STARTED within two
    refreshes and a reply timeout, and reports PENDING with no worker; a
    WatchStatus stream opened before the kill streams PENDING too. Before
    this change GetStatus said STARTED on A until the message came back
    (the visibility timeout, an hour by default).
    """
    log_dir = tmp_path_factory.mktemp("worker-gone")
    with managed(RedisServer(log_dir)) as redis_server:
        env = fault_env(redis_server.url, redis_server.url)
        gateway_env = {**env, "TASKGATE_WORKERS_REFRESH": str(REFRESH_SECONDS)}
        with (
            managed(start_worker(env, log_dir, concurrency=1, name="doomed")) as doomed,
            managed(start_worker(env, log_dir, concurrency=1, queues="elsewhere")),
            managed(Gateway(gateway_env, log_dir)) as gateway,
            grpc.insecure_channel(gateway.address) as channel,
        ):
            stub = pb_grpc.TaskServiceStub(channel)
            key = unique()
            task_id = submit(stub, "tests.faults.hold", key, HOLD_SECONDS)
            with redis_server.client() as client:
                poll(lambda: bool(run_pids(client, key)), "the task started")
                pool_pid = run_pids(client, key)[0]
            _two_refreshes(stub)
            started = _status(stub, task_id)
            streamed = _stream_states(stub, task_id)

            doomed.popen.kill()
            doomed.popen.wait(timeout=10)
            poll(lambda: not running(pool_pid), "the orphaned pool process died", timeout=10)
            killed_at = time.monotonic()
            poll(lambda: _status(stub, task_id).state != pb.TASK_STATE_STARTED, "not STARTED")
            noticed_after = time.monotonic() - killed_at
            after = _status(stub, task_id)
            states = streamed.result(timeout=10)

    assert started.state == pb.TASK_STATE_STARTED, started
    assert started.worker.startswith("doomed@"), started
    assert after.state == pb.TASK_STATE_PENDING, after
    assert after.state_name == "PENDING", after
    assert after.worker == "", after
    assert noticed_after < 2 * REFRESH_SECONDS + REPLY_SECONDS + 1, noticed_after
    assert states[-2:] == ["STARTED", "PENDING"], states
