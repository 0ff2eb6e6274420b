"""RabbitMQ as the broker (the first-steps article's choice), Redis as the result backend.

Each test session gets a private vhost on the machine's RabbitMQ (127.0.0.1:5672,
guest/guest), made and removed with rabbitmqctl.
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
import redis
from google.protobuf.duration_pb2 import Duration

from scripts.stack import REPO_ROOT, Gateway, ManagedProcess, RedisServer, celery_env, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import create_app
from tests.fault_helpers import runs
from tests.grpc_helpers import call_error
from tests.rabbitmq_helpers import private_vhost


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """A private RabbitMQ vhost."""
    yield from private_vhost()


@dataclass
class RabbitStack:
    """A worker and a gateway on RabbitMQ, with their shared environment."""

    env: dict[str, str]
    stub: pb_grpc.TaskServiceStub


@pytest.fixture(scope="module")
def rabbit(
    vhost: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RabbitStack]:
    log_dir = tmp_path_factory.mktemp("rabbitmq")
    env = celery_env(
        f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}",
        redis_server.db_url(2),
        TASKGATE_TASK_MODULES="taskgate.worker.tasks,tests.support_tasks",
        TASKGATE_TASKS="tasks.*,tests.*",
        PYTHONPATH=str(REPO_ROOT),
    )
    processes: list[ManagedProcess] = [start_worker(env, log_dir)]
    try:
        gateway = Gateway(env, log_dir)
        processes.append(gateway)
        with grpc.insecure_channel(gateway.address) as channel:
            yield RabbitStack(env, pb_grpc.TaskServiceStub(channel))
    finally:
        for process in reversed(processes):
            process.stop()


def _execute(stub: pb_grpc.TaskServiceStub, request: pb.SubmitRequest) -> pb.ExecuteResponse:
    return stub.Execute(pb.ExecuteRequest(submit=request, wait=Duration(seconds=20)), timeout=30)


def test_add_runs_through_rabbitmq(rabbit: RabbitStack) -> None:
    response = _execute(rabbit.stub, pb.SubmitRequest(task="tasks.add", args_json="[2, 3]"))
    assert (response.ready, response.result_json) == (True, "5")


def test_a_failure_comes_back_as_data(rabbit: RabbitStack) -> None:
    response = _execute(rabbit.stub, pb.SubmitRequest(task="tasks.fail", args_json='["no"]'))
    assert (response.state, response.error.type, response.error.message) == (
        pb.TASK_STATE_FAILURE,
        "ValueError",
        "no",
    )


def test_progress_is_streamed(rabbit: RabbitStack) -> None:
    request = pb.SubmitRequest(task="tasks.progress", args_json="[3, 0.2]")
    task_id = rabbit.stub.Submit(request, timeout=10).task_id
    watch = pb.WatchStatusRequest(task_id=task_id)
    states = [
        (message.status.state_name, message.status.meta_json)
        for message in rabbit.stub.WatchStatus(watch, timeout=30)
    ]
    progress = [json.loads(meta)["current"] for name, meta in states if name == "PROGRESS"]
    assert progress == [1, 2, 3]
    assert states[-1][0] == "SUCCESS"


def test_cancel_reaches_the_workers(rabbit: RabbitStack) -> None:
    options = pb.SubmitOptions(countdown=Duration(seconds=3))
    request = pb.SubmitRequest(task="tasks.echo_request", options=options)
    task_id = rabbit.stub.Submit(request, timeout=10).task_id
    cancel = rabbit.stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
    assert cancel.outcome == pb.CANCEL_OUTCOME_REVOKED
    # Past the countdown the worker discards it: had it run, SUCCESS would replace REVOKED.
    get = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=5))
    assert rabbit.stub.GetResult(get, timeout=10).state == pb.TASK_STATE_REVOKED


def test_idempotent_submit_runs_once(rabbit: RabbitStack) -> None:
    key = uuid.uuid4().hex
    request = pb.SubmitRequest(task="tests.count_run", args_json=f'["{key}"]', idempotency_key=key)
    first = rabbit.stub.Submit(request, timeout=10)
    second = rabbit.stub.Submit(request, timeout=10)
    assert (second.task_id, second.deduplicated) == (first.task_id, True)
    get = pb.GetResultRequest(task_id=first.task_id, wait=Duration(seconds=20))
    assert rabbit.stub.GetResult(get, timeout=30).result_json == "1"


def test_an_unreachable_rabbitmq_is_unavailable(
    rabbit: RabbitStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {**rabbit.env, "CELERY_BROKER_URL": "pyamqp://guest:guest@127.0.0.1:1//"}
    gateway = Gateway(env, tmp_path_factory.mktemp("rabbit-down"))
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
            error = call_error(lambda: stub.Submit(request, timeout=10))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        gateway.stop()


def test_copies_of_a_message_run_the_task_once(
    rabbit: RabbitStack, redis_server: RedisServer
) -> None:
    """Three messages with one task id, as a retried publish leaves them: one run
    (worker/guard.py); a task sent behind them shows the worker took all three."""
    key, task_id = uuid.uuid4().hex, str(uuid.uuid4())
    settings = CelerySettings(rabbit.env["CELERY_BROKER_URL"], rabbit.env["CELERY_RESULT_BACKEND"])
    publisher = create_app(settings, load_tasks=False)
    try:
        for _ in range(3):
            publisher.send_task("tests.count_run", args=[key], task_id=task_id)
        # No dispatch record for a task sent this way: read its result through Celery.
        behind = publisher.send_task("tests.count_run", args=[uuid.uuid4().hex])
        assert behind.get(timeout=30) == 1
    finally:
        publisher.close()
    with redis.Redis.from_url(redis_server.db_url(2)) as client:
        assert runs(client, key) == 1


def test_the_callers_traceparent_reaches_the_task_through_send_task(rabbit: RabbitStack) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = pb.SubmitRequest(task="tasks.echo_request", args_json='["traceparent", "tracestate"]')
    response = rabbit.stub.Execute(
        pb.ExecuteRequest(submit=request, wait=Duration(seconds=20)),
        metadata=(("traceparent", traceparent), ("tracestate", "congo=t61rcWkgMzE")),
        timeout=30,
    )
    assert json.loads(response.result_json)["headers"] == {
        "traceparent": traceparent,
        "tracestate": "congo=t61rcWkgMzE",
    }
