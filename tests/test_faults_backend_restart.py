"""The result backend killed and restarted under a consuming worker: nothing acknowledged is lost.

The stack is private to this module: a broker redis-server that stays up, a
separate result-backend redis-server with `appendonly yes` (so the gateway's
dispatch records and the stored states survive its SIGKILL) that the tests
kill and start again on the same port and directory, and a gateway that
stays up throughout. Each test starts its own worker. The tasks count their
runs in the broker's Redis, which stays up.
"""

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
import redis

from scripts.stack import Gateway, RedisServer, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import (
    TASK_MODULES,
    BackendStack,
    await_result,
    fault_env,
    managed,
    poll,
    runs,
    unique,
    write_config,
)
from tests.rabbitmq_helpers import private_vhost, rabbitmqctl

OUTAGE_SECONDS = 3.0
BEFORE_OUTAGE = 300  # submitted in one batch just before the kill: a backlog for the worker
AFTER_OUTAGE = 100
QUEUE = "celery"
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages (Redis broker)


def _env(broker_url: str, backend_url: str, config_dir: Path | None = None) -> dict[str, str]:
    """The environment of a worker or gateway that also runs and allows tests.outage.count."""
    env = fault_env(broker_url, backend_url, config_dir)
    env["TASKGATE_TASK_MODULES"] = f"{TASK_MODULES},tests.outage_tasks"
    return env


class Stack(BackendStack):
    """An append-only backend, killed and started again; the broker stays up."""

    def env(self, config_dir: Path | None = None) -> dict[str, str]:
        """The environment of a worker of this stack."""
        return _env(self.broker.url, self.backend.url, config_dir)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A broker, a separate append-only backend and a gateway; no worker."""
    log_dir = tmp_path_factory.mktemp("faults-backend-restart")
    backends: list[RedisServer] = []
    with ExitStack() as processes:
        processes.callback(lambda: [backend.stop() for backend in backends])
        broker = processes.enter_context(managed(RedisServer(log_dir)))
        backends.append(RedisServer(log_dir, appendonly=True))
        gateway = Gateway(_env(broker.url, backends[0].url), log_dir)
        processes.enter_context(managed(gateway))
        channel = processes.enter_context(grpc.insecure_channel(gateway.address))
        yield Stack(broker, backends, log_dir, pb_grpc.TaskServiceStub(channel), appendonly=True)


def _short_retries(config_dir: Path) -> Path:
    """A configuration module whose store retries give up within a fraction of a second."""
    return write_config(
        config_dir,
        result_backend_always_retry=True,
        result_backend_max_retries=2,
        result_backend_base_sleep_between_retries_ms=10,
        result_backend_max_sleep_between_retries_ms=50,
    )


def _count_request(stack: Stack, key: str, hold: float = 0) -> pb.SubmitRequest:
    """Submit tests.outage.count, counting in the broker's Redis (which stays up)."""
    args = [stack.broker.url, key, hold]
    return pb.SubmitRequest(task="tests.outage.count", args_json=json.dumps(args))


def _submit_batch(stack: Stack, keys: list[str]) -> dict[str, str]:
    """SubmitBatch one count task per key; `{task_id: key}` for the submissions answered OK."""
    batch = pb.SubmitBatchRequest(requests=[_count_request(stack, key) for key in keys])
    try:
        results = stack.stub.SubmitBatch(batch, timeout=20).results
    except grpc.RpcError:
        return {}
    return {
        result.task_id: key for result, key in zip(results, keys, strict=True) if result.task_id
    }


def _submit_during_outage(stack: Stack) -> dict[str, str]:
    """Keep submitting, one at a time, for OUTAGE_SECONDS; the ones answered OK."""
    acknowledged: dict[str, str] = {}
    ends = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < ends:
        key = unique("outage-")
        try:
            task_id = stack.stub.Submit(_count_request(stack, key), timeout=2).task_id
        except grpc.RpcError:
            continue
        acknowledged[task_id] = key
    return acknowledged


def _states(stack: Stack, task_ids: list[str]) -> dict[str, str]:
    """Each task's state as GetStatus reports it (or the call's error code)."""
    states = {}
    for task_id in task_ids:
        try:
            status = stack.stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=5)
            states[task_id] = pb.TaskState.Name(status.state)
        except grpc.RpcError as exc:
            states[task_id] = exc.code().name
    return states


def _unfinished(stack: Stack, task_ids: list[str], timeout: float) -> dict[str, str]:
    """Poll until every task is SUCCESS or `timeout` passes; the states of the others."""
    left = list(task_ids)
    deadline = time.monotonic() + timeout
    while left:
        states = _states(stack, left)
        left = [task_id for task_id, state in states.items() if state != "TASK_STATE_SUCCESS"]
        if not left or time.monotonic() > deadline:
            return {task_id: states[task_id] for task_id in left}
        time.sleep(0.2)
    return {}


def test_tasks_acknowledged_around_a_backend_restart_all_run(stack: Stack) -> None:
    """Checks `result_backend_always_retry` (SAFE_DEFAULTS) and the requeueing backend.

    The issue's scenario, scaled down: 300 tasks are acknowledged in one
    batch, and the backend is SIGKILLed at once, while the worker works
    through the backlog; Submits go on for the 3 s outage (those answered
    UNAVAILABLE are not acknowledged, so not counted), the backend comes back
    on the same port, and 100 more are submitted. Every task answered OK must
    reach SUCCESS and have counted at least one run. Without the retries, a
    pool process whose STARTED store fails reports an internal error, fails
    to store FAILURE too, and acknowledges the message: the tasks it takes
    during the outage never run and stay PENDING.
    """
    with managed(start_worker(stack.env(), stack.log_dir)):
        acknowledged = _submit_batch(stack, [unique("before-") for _ in range(BEFORE_OUTAGE)])
        assert len(acknowledged) == BEFORE_OUTAGE
        stack.kill_backend()
        with stack.broker.client() as broker:
            backlog = broker.llen(QUEUE)
        assert backlog > 0, "the worker finished the batch before the kill: nothing was at risk"
        acknowledged |= _submit_during_outage(stack)
        stack.start_backend_again()
        acknowledged |= _submit_batch(stack, [unique("after-") for _ in range(AFTER_OUTAGE)])

        unfinished = _unfinished(stack, list(acknowledged), timeout=60)
        with stack.broker.client() as broker:
            counts = [runs(broker, key) for key in acknowledged.values()]
    never_ran = counts.count(0)
    print(
        f"{len(acknowledged)} acknowledged, {backlog} queued at the kill; "
        f"never ran: {never_ran}, ran twice: {sum(1 for n in counts if n > 1)}"
    )
    assert not unfinished, (
        f"{len(unfinished)} of {len(acknowledged)} acknowledged tasks did not reach SUCCESS "
        f"({never_ran} never ran): {sorted(set(unfinished.values()))}"
    )
    assert never_ran == 0


def _broker_copies(broker: redis.Redis, task_id: str) -> list[dict[str, object]]:
    """Every copy of the task's message in the broker: in the queue or delivered, unacknowledged."""
    payloads = [json.loads(raw) for raw in broker.lrange(QUEUE, 0, -1)]
    payloads += [json.loads(raw)[0] for raw in broker.hvals(UNACKED)]
    return [payload for payload in payloads if payload["headers"]["id"] == task_id]


def _given_back(broker: redis.Redis, task_id: str) -> bool:
    """True when the broker holds the message again, flagged redelivered (a requeue)."""
    copies = _broker_copies(broker, task_id)
    return any(copy["headers"].get("redelivered") for copy in copies)  # type: ignore[attr-defined]


def test_a_task_whose_started_cannot_be_stored_goes_back_to_the_broker(
    stack: Stack, tmp_path: Path
) -> None:
    """Checks the requeueing backend (worker/backend.py) past the end of the retries.

    A task is acknowledged and waits in the queue; the backend is killed and
    a worker starts whose retry window is shrunk to a fraction of a second.
    The worker takes the task, cannot store STARTED, and must give the
    message back: the broker holds it again, once, flagged redelivered (in
    the queue, or in kombu's unacknowledged hash while it is tried again),
    and the task body has not run. Once the backend is back, the task runs,
    once. Without the requeue the message is acknowledged after the failed
    stores: the broker holds nothing and the task never runs.
    """
    key = unique("started-")
    task_id = stack.stub.Submit(_count_request(stack, key), timeout=5).task_id
    stack.kill_backend()
    _short_retries(tmp_path)
    with (
        managed(start_worker(stack.env(tmp_path), stack.log_dir)),
        stack.broker.client() as broker,
    ):
        poll(lambda: _given_back(broker, task_id), "the message back in the broker", 15)
        assert len(_broker_copies(broker, task_id)) == 1
        assert runs(broker, key) == 0
        stack.start_backend_again()
        result = await_result(stack.stub, task_id, timeout=30)
        assert pb.TaskState.Name(result.state) == "TASK_STATE_SUCCESS"
        assert json.loads(result.result_json) == {"runs": 1, "redelivered": True}
        assert runs(broker, key) == 1


def test_a_task_whose_success_cannot_be_stored_goes_back_and_runs_again(
    stack: Stack, tmp_path: Path
) -> None:
    """Checks the requeueing backend on the final store, after the task body ran.

    A task stores STARTED, runs, and holds for 1.5 s; meanwhile the backend
    is killed, so storing SUCCESS fails past the (shrunk) retries. The worker
    must give the message back rather than acknowledge it: the broker holds
    it again, flagged redelivered, and once the backend is back the task
    runs a second time (at least once: its first result was never stored)
    and ends SUCCESS. Without the requeue the message is acknowledged and
    the task stays STARTED for ever.
    """
    key = unique("success-")
    _short_retries(tmp_path)
    with (
        managed(start_worker(stack.env(tmp_path), stack.log_dir)),
        stack.broker.client() as broker,
    ):
        task_id = stack.stub.Submit(_count_request(stack, key, hold=1.5), timeout=5).task_id
        poll(lambda: runs(broker, key) == 1, "the task running", 10)
        stack.kill_backend()
        poll(lambda: _given_back(broker, task_id), "the message back in the broker", 15)
        stack.start_backend_again()
        result = await_result(stack.stub, task_id, timeout=30)
        assert pb.TaskState.Name(result.state) == "TASK_STATE_SUCCESS"
        assert json.loads(result.result_json) == {"runs": 2, "redelivered": True}


@pytest.fixture
def vhost() -> Iterator[str]:
    """A private RabbitMQ vhost."""
    yield from private_vhost()


def _rabbit_messages(vhost: str) -> int:
    """Messages in the vhost's default queue, ready or delivered and unacknowledged."""
    rows = rabbitmqctl(
        "list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "messages"
    )
    counts = dict(line.split() for line in rows.splitlines() if line.strip())
    return int(counts.get(QUEUE, 0))


def test_with_rabbitmq_a_task_whose_started_cannot_be_stored_is_requeued(
    stack: Stack, vhost: str, tmp_path: Path
) -> None:
    """Checks that the requeue reaches RabbitMQ as a requeue, not an acknowledgement.

    As the STARTED test above, with RabbitMQ as the broker: the worker gives
    the message back and RabbitMQ delivers it again (the worker logs a
    second receipt) and still holds it; when the backend is back the task
    runs once, in a delivery RabbitMQ flags redelivered. Without the requeue
    RabbitMQ holds nothing after the first delivery and the task never runs.
    """
    broker_url = f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    key = unique("rabbit-")
    with ExitStack() as processes:
        gateway = Gateway(_env(broker_url, stack.backend.url), stack.log_dir)
        processes.enter_context(managed(gateway))
        stub = pb_grpc.TaskServiceStub(
            processes.enter_context(grpc.insecure_channel(gateway.address))
        )
        task_id = stub.Submit(_count_request(stack, key), timeout=10).task_id
        stack.kill_backend()
        _short_retries(tmp_path)
        worker_env = _env(broker_url, stack.backend.url, tmp_path)
        worker = processes.enter_context(managed(start_worker(worker_env, stack.log_dir)))
        delivered_again = f"[{task_id}] received"
        poll(lambda: worker.log_text().count(delivered_again) >= 2, "a second delivery", 15)
        assert _rabbit_messages(vhost) == 1
        with stack.broker.client() as counter:
            assert runs(counter, key) == 0
            stack.start_backend_again()
            result = await_result(stub, task_id, timeout=30)
            assert pb.TaskState.Name(result.state) == "TASK_STATE_SUCCESS"
            assert json.loads(result.result_json) == {"runs": 1, "redelivered": True}
            assert runs(counter, key) == 1
