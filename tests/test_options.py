"""Every SubmitOptions field, observed where it matters: on a real worker, or at the broker."""

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from scripts.stack import (
    Gateway,
    ManagedProcess,
    RedisServer,
    celery_env,
    free_port,
    start_worker,
    with_config_module,
)
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import managed
from tests.grpc_helpers import call_error, violated_fields
from tests.lifecycle_helpers import (
    decoded,
    execute,
    gateway_stub,
    get_status,
    in_seconds,
    node_name,
    seconds,
    submit,
    timestamp,
    unix,
    wait_result,
)

DELAY = 1.5  # seconds a countdown or eta holds a task back


@pytest.fixture(scope="module")
def reports_worker(stack_env: dict[str, str], stack_dir: Path) -> Iterator[ManagedProcess]:
    """A second worker that consumes only the "reports" queue."""
    process = start_worker(stack_env, stack_dir, queues="reports", name=f"reports-{_suffix()}")
    yield process
    process.stop()


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


def _config_env(
    directory: Path, broker: str, backend: str, module: str, body: str
) -> dict[str, str]:
    """The environment for processes that load `body` as the Celery configuration module."""
    return with_config_module(celery_env(broker, backend), directory, module, body)


@pytest.fixture(scope="module")
def routed(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[pb_grpc.TaskServiceStub, ManagedProcess]]:
    """A gateway and a "low-priority"-only worker whose configuration routes echo_request there."""
    directory = tmp_path_factory.mktemp("routes")
    body = 'task_routes = {"tasks.echo_request": {"queue": "low-priority"}}\n'
    # Database 6: no other test's worker may take these tasks.
    url = redis_server.db_url(6)
    env = _config_env(directory, url, url, "lifecycleroutes", body)
    worker = start_worker(env, directory, queues="low-priority", name=f"routed-{_suffix()}")
    gateway = Gateway(env, directory)
    try:
        with gateway_stub(gateway) as stub:
            yield stub, worker
    finally:
        gateway.stop()
        worker.stop()


# The gateway's configured publish retry policy: one retry after a one-second pause.
CONFIGURED_RETRY_POLICY = (
    "task_publish_retry_policy = "
    '{"max_retries": 1, "interval_start": 1.0, "interval_step": 0, "interval_max": 1.0}\n'
)


def _broker_down_gateway(
    directory: Path, redis_server: RedisServer, config: str, **extra_env: str
) -> Iterator[pb_grpc.TaskServiceStub]:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = _config_env(directory, dead, redis_server.url, "brokerdown", config)
    gateway = Gateway({**env, **extra_env}, directory)
    try:
        with gateway_stub(gateway) as stub:
            yield stub
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def broker_down(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[pb_grpc.TaskServiceStub]:
    """A gateway whose broker port has nothing listening, with a live result backend."""
    directory = tmp_path_factory.mktemp("brokerdown")
    yield from _broker_down_gateway(directory, redis_server, CONFIGURED_RETRY_POLICY)


def test_queue_sends_the_task_to_the_worker_that_consumes_it(
    stub: pb_grpc.TaskServiceStub, reports_worker: ManagedProcess
) -> None:
    options = pb.SubmitOptions(queue="reports")
    result = execute(stub, "tasks.echo_request", options=options)
    assert result.state == pb.TASK_STATE_SUCCESS
    assert decoded(result.result_json)["queue"] == "reports"
    assert get_status(stub, result.task_id).worker == node_name(reports_worker)


def test_without_a_queue_the_task_goes_to_the_default_queue(
    stub: pb_grpc.TaskServiceStub, worker: ManagedProcess, reports_worker: ManagedProcess
) -> None:
    result = execute(stub, "tasks.echo_request")
    assert decoded(result.result_json)["queue"] == "celery"
    assert get_status(stub, result.task_id).worker == node_name(worker)


def test_task_routes_choose_the_queue_when_none_is_given(
    routed: tuple[pb_grpc.TaskServiceStub, ManagedProcess],
) -> None:
    routed_stub, routed_worker = routed
    result = execute(routed_stub, "tasks.echo_request")
    assert result.state == pb.TASK_STATE_SUCCESS
    assert decoded(result.result_json)["queue"] == "low-priority"
    assert get_status(routed_stub, result.task_id).worker == node_name(routed_worker)


def _observe_until_ready(
    stub: pb_grpc.TaskServiceStub, task_id: str, timeout: float = 20.0
) -> list[tuple[float, pb.GetStatusResponse]]:
    """GetStatus until the task is ready, each reply with the wall-clock time it arrived."""
    seen: list[tuple[float, pb.GetStatusResponse]] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1][1].state not in (pb.TASK_STATE_SUCCESS, pb.TASK_STATE_FAILURE):
        assert time.monotonic() < deadline, f"task not ready within {timeout}s: {seen[-1][1]}"
        status = get_status(stub, task_id)
        seen.append((time.time(), status))
        time.sleep(0.05)
    return seen


def _assert_held_until(seen: list[tuple[float, pb.GetStatusResponse]], not_before: float) -> None:
    """Every reply that arrived before `not_before` was PENDING; the task then succeeded."""
    early = [status for arrived, status in seen if arrived < not_before]
    assert len(early) >= 5, "the task was not observed while it was held back"
    assert {status.state for status in early} == {pb.TASK_STATE_PENDING}
    final = seen[-1][1]
    assert final.state == pb.TASK_STATE_SUCCESS
    assert unix(final.date_done) >= not_before


def test_countdown_holds_the_task_back(stub: pb_grpc.TaskServiceStub) -> None:
    options = pb.SubmitOptions(countdown=seconds(DELAY))
    task_id = submit(stub, "tasks.echo_request", options=options)
    seen = _observe_until_ready(stub, task_id)
    submitted_at = unix(seen[0][1].submitted_at)
    _assert_held_until(seen, submitted_at + DELAY)
    assert decoded(wait_result(stub, task_id).result_json)["eta"] is not None


def test_eta_holds_the_task_back_until_that_time(stub: pb_grpc.TaskServiceStub) -> None:
    eta = in_seconds(DELAY)
    task_id = submit(stub, "tasks.echo_request", options=pb.SubmitOptions(eta=timestamp(eta)))
    seen = _observe_until_ready(stub, task_id)
    _assert_held_until(seen, eta.timestamp())
    reported = decoded(wait_result(stub, task_id).result_json)["eta"]
    assert datetime.fromisoformat(reported) == eta


def test_expires_passing_in_the_queue_revokes_the_task(stub: pb_grpc.TaskServiceStub) -> None:
    # Held back by a countdown until after it expires: no worker may run it.
    options = pb.SubmitOptions(countdown=seconds(DELAY), expires=timestamp(in_seconds(0.5)))
    task_id = submit(stub, "tasks.echo_request", options=options)
    result = wait_result(stub, task_id)
    assert (result.ready, result.state) == (True, pb.TASK_STATE_REVOKED)
    assert result.error.type == "TaskRevokedError"
    assert "expired" in result.error.message
    assert get_status(stub, task_id).state == pb.TASK_STATE_REVOKED


def test_expires_reaches_a_task_that_starts_in_time(stub: pb_grpc.TaskServiceStub) -> None:
    expires = in_seconds(60)
    result = execute(
        stub, "tasks.echo_request", options=pb.SubmitOptions(expires=timestamp(expires))
    )
    assert result.state == pb.TASK_STATE_SUCCESS
    assert datetime.fromisoformat(decoded(result.result_json)["expires"]) == expires


def test_priority_reaches_the_task(stub: pb_grpc.TaskServiceStub) -> None:
    result = execute(stub, "tasks.echo_request", options=pb.SubmitOptions(priority=7))
    assert decoded(result.result_json)["priority"] == 7


def test_headers_reach_the_task(stub: pb_grpc.TaskServiceStub) -> None:
    options = pb.SubmitOptions(headers={"tenant": "blue"})
    result = execute(stub, "tasks.echo_request", "tenant", "region", options=options)
    assert decoded(result.result_json)["headers"] == {"tenant": "blue", "region": None}


def _timed_submit(
    stub: pb_grpc.TaskServiceStub, options: pb.SubmitOptions, timeout: float = 5.0
) -> tuple[grpc.RpcError, float]:
    started = time.monotonic()
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]", options=options)
    error = call_error(lambda: stub.Submit(request, timeout=timeout))
    return error, time.monotonic() - started


def test_without_retry_policy_the_configured_one_applies(
    broker_down: pb_grpc.TaskServiceStub,
) -> None:
    error, elapsed = _timed_submit(broker_down, pb.SubmitOptions())
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert elapsed >= 0.95  # the configured policy's one-second pause


def test_retry_policy_sets_the_pauses_between_publish_attempts(
    broker_down: pb_grpc.TaskServiceStub,
) -> None:
    policy = pb.PublishRetryPolicy(
        max_retries=2, interval_start=seconds(0.1), interval_step=seconds(0.1)
    )
    policy.interval_max.CopyFrom(seconds(1.0))
    error, elapsed = _timed_submit(broker_down, pb.SubmitOptions(retry_policy=policy))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    # Pauses of 0.1 s and 0.2 s, instead of the configured policy's one second.
    assert 0.28 <= elapsed < 0.9


def test_retry_policy_without_retries_fails_at_once(
    broker_down: pb_grpc.TaskServiceStub,
) -> None:
    # First a publish under the configured policy (a one-second pause), then none at all.
    error, _ = _timed_submit(broker_down, pb.SubmitOptions())
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    policy = pb.PublishRetryPolicy(max_retries=0)
    error, elapsed = _timed_submit(broker_down, pb.SubmitOptions(retry_policy=policy), 3.0)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert elapsed < 0.5  # one refused connection and no pause


@pytest.fixture
def one_publish_thread(
    tmp_path: Path, redis_server: RedisServer
) -> Iterator[pb_grpc.TaskServiceStub]:
    """A broker-down gateway with a single publish thread, whose publishes give up after 1 s."""
    yield from _broker_down_gateway(
        tmp_path,
        redis_server,
        # kombu stops retrying a connection after broker_connection_timeout, whatever the policy.
        CONFIGURED_RETRY_POLICY + "broker_connection_timeout = 1.0\n",
        TASKGATE_PUBLISH_THREADS="1",
        TASKGATE_GRACE="1",
        TASKGATE_WORKERS_REFRESH="600",
    )


def _answers_quickly(stub: pb_grpc.TaskServiceStub, options: pb.SubmitOptions) -> bool:
    error, elapsed = _timed_submit(stub, options, 1.0)
    return error.code() == grpc.StatusCode.UNAVAILABLE and elapsed < 0.3


def test_publish_retries_stop_at_the_deadline(
    one_publish_thread: pb_grpc.TaskServiceStub,
) -> None:
    quick = pb.SubmitOptions(retry_policy=pb.PublishRetryPolicy(max_retries=1))
    assert _answers_quickly(one_publish_thread, quick)
    slow = pb.PublishRetryPolicy(max_retries=3, interval_start=seconds(1.0))
    slow.interval_max.CopyFrom(seconds(1.0))
    # No 1 s pause fits in a 0.3 s deadline: the publish is tried once, and the caller
    # hears UNAVAILABLE before its deadline instead of DEADLINE_EXCEEDED.
    error, elapsed = _timed_submit(one_publish_thread, pb.SubmitOptions(retry_policy=slow), 0.3)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert elapsed < 0.3
    # Nothing keeps retrying behind the caller's back: the next caller is answered at once.
    assert _answers_quickly(one_publish_thread, quick)


MAX_START_DELAY = 60.0


@pytest.fixture(scope="module")
def start_limited(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pb_grpc.TaskServiceStub]:
    """A gateway that accepts starts at most MAX_START_DELAY seconds ahead."""
    env = {**stack_env, "TASKGATE_MAX_START_DELAY": str(MAX_START_DELAY)}
    with (
        managed(Gateway(env, tmp_path_factory.mktemp("start-limit"))) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        yield pb_grpc.TaskServiceStub(channel)


@pytest.mark.parametrize("option", ["countdown", "eta"])
def test_a_start_past_the_configured_limit_is_refused(
    start_limited: pb_grpc.TaskServiceStub, option: str
) -> None:
    """A worker without taskgate's heartbeat lets a Redis broker hand a task held past
    its visibility timeout to another worker, again and again (Celery's caveat): the
    operator caps the start (TASKGATE_MAX_START_DELAY). Past it the Submit is
    INVALID_ARGUMENT naming the field; a start inside it is accepted."""
    late, inside = pb.SubmitOptions(), pb.SubmitOptions()
    if option == "countdown":
        late.countdown.CopyFrom(seconds(MAX_START_DELAY + 30))
        inside.countdown.CopyFrom(seconds(MAX_START_DELAY / 2))
    else:
        late.eta.CopyFrom(timestamp(in_seconds(MAX_START_DELAY + 30)))
        inside.eta.CopyFrom(timestamp(in_seconds(MAX_START_DELAY / 2)))
    refused = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]", options=late)
    error = call_error(lambda: start_limited.Submit(refused, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [f"options.{option}"]
    accepted = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]", options=inside)
    task_id = start_limited.Submit(accepted, timeout=5).task_id
    start_limited.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
