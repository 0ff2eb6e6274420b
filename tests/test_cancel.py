"""Cancel against a real worker: queued, retrying, running and finished tasks, and bad ids."""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from scripts.stack import ManagedProcess, RedisServer
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, violated_fields
from tests.lifecycle_helpers import (
    assert_nothing_published,
    count_in_log,
    get_status,
    poll,
    poll_status,
    seconds,
    submit,
    subscribers,
    wait_result,
    wait_started,
)


def cancel(
    stub: pb_grpc.TaskServiceStub, task_id: str, *, terminate: bool = False
) -> pb.CancelResponse:
    """Cancel the task and return what the gateway says it did."""
    return stub.Cancel(pb.CancelRequest(task_id=task_id, terminate=terminate), timeout=10)


def _discarded(worker: ManagedProcess, task: str, task_id: str) -> bool:
    return count_in_log(worker, f"Discarding revoked task: {task}[{task_id}]") > 0


# A queued task is revoked by the cancel, whoever stores REVOKED first: gateway or worker.
QUEUED_OUTCOMES = (pb.CANCEL_OUTCOME_REVOKED,)


def assert_revoked(result: pb.GetResultResponse) -> None:
    """The task ended REVOKED, reported as Celery's TaskRevokedError."""
    assert (result.ready, result.state) == (True, pb.TASK_STATE_REVOKED), result
    assert result.error.type == "TaskRevokedError"


def test_cancel_of_a_queued_task_revokes_it_and_it_never_runs(
    stub: pb_grpc.TaskServiceStub, worker: ManagedProcess
) -> None:
    options = pb.SubmitOptions(countdown=seconds(1.5))
    task_id = submit(stub, "tasks.echo_request", options=options)
    response = cancel(stub, task_id)
    assert (response.task_id, response.state) == (task_id, pb.TASK_STATE_REVOKED)
    assert response.outcome in QUEUED_OUTCOMES
    assert get_status(stub, task_id).state == pb.TASK_STATE_REVOKED
    assert_revoked(wait_result(stub, task_id))
    # Past the countdown the worker reaches the message, and drops it instead of running it.
    poll(lambda: _discarded(worker, "tasks.echo_request", task_id), "the worker discarding it")
    assert get_status(stub, task_id).state == pb.TASK_STATE_REVOKED
    assert_revoked(wait_result(stub, task_id))
    assert count_in_log(worker, f"tasks.echo_request[{task_id}] succeeded") == 0


def _cancel_queued_tasks_at_once(
    stub: pb_grpc.TaskServiceStub, count: int
) -> list[tuple[str, pb.CancelResponse]]:
    """Queue `count` tasks for later, then cancel them all concurrently."""
    queued = pb.SubmitRequest(
        task="tasks.add", args_json="[1, 1]", options=pb.SubmitOptions(countdown=seconds(60))
    )
    batch = stub.SubmitBatch(pb.SubmitBatchRequest(requests=[queued] * count), timeout=10)
    ids = [result.task_id for result in batch.results]
    with ThreadPoolExecutor(count) as pool:
        return list(zip(ids, pool.map(lambda task_id: cancel(stub, task_id), ids), strict=True))


def test_concurrent_cancels_of_queued_tasks_revoke_every_one(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    for task_id, response in _cancel_queued_tasks_at_once(stub, 20):
        assert response.state == pb.TASK_STATE_REVOKED
        assert get_status(stub, task_id).state == pb.TASK_STATE_REVOKED


def test_cancels_of_queued_tasks_all_say_revoked(stub: pb_grpc.TaskServiceStub) -> None:
    # A race is lost only now and then (often half the time, rarely never in 20): five rounds.
    for _ in range(5):
        outcomes = [response.outcome for _, response in _cancel_queued_tasks_at_once(stub, 20)]
        assert outcomes == [pb.CANCEL_OUTCOME_REVOKED] * 20


def test_cancel_of_a_retrying_task_stops_its_next_attempt(
    stub: pb_grpc.TaskServiceStub, worker: ManagedProcess
) -> None:
    task_id = submit(stub, "tasks.retry", 3, 1.0)
    poll_status(stub, task_id, lambda status: status.state == pb.TASK_STATE_RETRY, "RETRY")
    response = cancel(stub, task_id)
    assert (response.outcome in QUEUED_OUTCOMES, response.state) == (True, pb.TASK_STATE_REVOKED)
    poll(lambda: _discarded(worker, "tasks.retry", task_id), "the worker discarding the retry")
    status = get_status(stub, task_id)
    assert status.state == pb.TASK_STATE_REVOKED
    assert_revoked(wait_result(stub, task_id))


def test_cancel_with_terminate_stops_a_running_task(
    stub: pb_grpc.TaskServiceStub, worker: ManagedProcess, redis_server: RedisServer
) -> None:
    task_id = submit(stub, "tasks.sleep", 30)
    wait_started(stub, task_id)
    started = time.monotonic()
    response = cancel(stub, task_id, terminate=True)
    assert response.outcome == pb.CANCEL_OUTCOME_TERMINATION_SIGNALLED
    assert response.state in (pb.TASK_STATE_STARTED, pb.TASK_STATE_REVOKED)
    result = wait_result(stub, task_id)
    assert_revoked(result)
    assert time.monotonic() - started < 10, "the task was not stopped; it ran on"
    # Not redelivered and run again: no new state is stored, and it was received once.
    with redis_server.client() as client:
        assert_nothing_published(client, task_id, window=1.5)
    assert get_status(stub, task_id).state == pb.TASK_STATE_REVOKED
    assert count_in_log(worker, f"Task tasks.sleep[{task_id}] received") == 1


def test_cancel_without_terminate_lets_a_running_task_finish(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    task_id = submit(stub, "tasks.sleep", 1.5)
    wait_started(stub, task_id)
    response = cancel(stub, task_id)
    assert (response.outcome, response.state) == (
        pb.CANCEL_OUTCOME_STILL_RUNNING,
        pb.TASK_STATE_STARTED,
    )
    result = wait_result(stub, task_id)
    assert (result.state, result.result_json) == (pb.TASK_STATE_SUCCESS, "1.5")


def test_cancel_of_a_finished_task_changes_nothing(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.add", 2, 3)
    assert wait_result(stub, task_id).result_json == "5"
    for terminate in (False, True):
        response = cancel(stub, task_id, terminate=terminate)
        assert (response.outcome, response.state) == (
            pb.CANCEL_OUTCOME_ALREADY_FINISHED,
            pb.TASK_STATE_SUCCESS,
        )
    assert get_status(stub, task_id).state == pb.TASK_STATE_SUCCESS
    result = wait_result(stub, task_id)
    assert (result.state, result.result_json) == (pb.TASK_STATE_SUCCESS, "5")


def test_cancel_of_a_failed_task_changes_nothing(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.fail", "boom")
    assert wait_result(stub, task_id).state == pb.TASK_STATE_FAILURE
    response = cancel(stub, task_id)
    assert (response.outcome, response.state) == (
        pb.CANCEL_OUTCOME_ALREADY_FINISHED,
        pb.TASK_STATE_FAILURE,
    )
    assert wait_result(stub, task_id).error.message == "boom"


def test_a_waiting_get_result_is_woken_by_the_cancel(
    stub: pb_grpc.TaskServiceStub, redis_server: RedisServer
) -> None:
    task_id = submit(stub, "tasks.add", 1, 1, options=pb.SubmitOptions(countdown=seconds(30)))
    request = pb.GetResultRequest(task_id=task_id, wait=seconds(20))
    with ThreadPoolExecutor(1) as pool, redis_server.client() as client:
        waiting = pool.submit(stub.GetResult, request, timeout=30)
        # The gateway subscribes to the task's channel once the wait is in place.
        poll(lambda: subscribers(client, task_id) == 1, "the gateway subscribed for the wait")
        assert not waiting.done()
        cancelled_at = time.monotonic()
        assert cancel(stub, task_id).outcome in QUEUED_OUTCOMES
        result = waiting.result(timeout=25)
        woken_after = time.monotonic() - cancelled_at
    assert_revoked(result)
    assert woken_after < 3, f"the wait ended {woken_after:.1f}s after the cancel"


def test_cancel_of_an_unknown_id_is_not_found(stub: pb_grpc.TaskServiceStub) -> None:
    unknown = str(uuid.uuid4())
    error = call_error(lambda: cancel(stub, unknown))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert unknown in (error.details() or "")


@pytest.mark.parametrize("task_id", ["", "not-a-uuid", "1234"])
def test_cancel_of_a_malformed_id_is_invalid_argument(
    stub: pb_grpc.TaskServiceStub, task_id: str
) -> None:
    assert violated_fields(call_error(lambda: cancel(stub, task_id))) == ["task_id"]
