"""WatchStatus against a real worker: every state in order, the end of the stream, and its cost."""

import json
import uuid

import grpc
from google.rpc import error_details_pb2

from scripts.stack import RedisServer
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, detail, rich_status, violated_fields
from tests.lifecycle_helpers import (
    CALL_TIMEOUT,
    execute,
    poll,
    seconds,
    submit,
    subscribers,
)

FINAL_STATES = (pb.TASK_STATE_SUCCESS, pb.TASK_STATE_FAILURE, pb.TASK_STATE_REVOKED)


def watch(stub: pb_grpc.TaskServiceStub, task_id: str) -> list[pb.GetStatusResponse]:
    """Every state the stream sends; returns only once the gateway ends the stream."""
    stream = stub.WatchStatus(pb.WatchStatusRequest(task_id=task_id), timeout=CALL_TIMEOUT)
    return [message.status for message in stream]


def open_watch(
    stub: pb_grpc.TaskServiceStub, task_id: str
) -> "grpc._CallIterator[pb.WatchStatusResponse]":
    """A stream left open, to be read or cancelled by the test."""
    return stub.WatchStatus(pb.WatchStatusRequest(task_id=task_id), timeout=CALL_TIMEOUT)


def test_progress_is_streamed_step_by_step_until_success(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.progress", 4, 0.3)
    states = watch(stub, task_id)
    assert {status.task_id for status in states} == {task_id}
    assert {status.task for status in states} == {"tasks.progress"}
    assert states[0].state in (pb.TASK_STATE_PENDING, pb.TASK_STATE_STARTED)
    progress = [status for status in states if status.state_name == "PROGRESS"]
    assert [status.state for status in progress] == [pb.TASK_STATE_CUSTOM] * 4
    assert [json.loads(status.meta_json) for status in progress] == [
        {"current": step, "total": 4} for step in range(1, 5)
    ]
    first_progress = states.index(progress[0])
    assert {status.state for status in states[:first_progress]} <= {
        pb.TASK_STATE_PENDING,
        pb.TASK_STATE_STARTED,
    }
    assert states[first_progress : first_progress + 4] == progress
    final = states[-1]
    assert (final.state, final.state_name) == (pb.TASK_STATE_SUCCESS, "SUCCESS")
    assert final.HasField("date_done")
    assert states.count(final) == 1


def test_a_late_subscriber_gets_the_final_state_once(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = execute(stub, "tasks.add", 2, 3).task_id
    states = watch(stub, task_id)
    assert len(states) == 1
    assert (states[0].task_id, states[0].state) == (task_id, pb.TASK_STATE_SUCCESS)


def test_retries_are_streamed_with_their_count(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.retry", 2, 0.3)
    states = watch(stub, task_id)
    retries = [status.retries for status in states if status.state == pb.TASK_STATE_RETRY]
    assert retries == [0, 1]
    final = states[-1]
    assert (final.state, final.retries) == (pb.TASK_STATE_SUCCESS, 2)


def test_the_stream_ends_after_a_failure(stub: pb_grpc.TaskServiceStub) -> None:
    states = watch(stub, submit(stub, "tasks.fail", "boom"))
    assert states[-1].state == pb.TASK_STATE_FAILURE
    assert all(status.state not in FINAL_STATES for status in states[:-1])


def test_the_stream_ends_when_the_task_is_cancelled(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.add", 1, 1, options=pb.SubmitOptions(countdown=seconds(30)))
    stream = open_watch(stub, task_id)
    assert next(stream).status.state == pb.TASK_STATE_PENDING
    stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
    rest = [message.status for message in stream]
    assert [status.state for status in rest] == [pb.TASK_STATE_REVOKED]


def test_a_cancelled_stream_frees_the_gateways_subscription(
    stub: pb_grpc.TaskServiceStub, redis_server: RedisServer
) -> None:
    task_id = submit(stub, "tasks.add", 1, 1, options=pb.SubmitOptions(countdown=seconds(30)))
    with redis_server.client() as client:
        first, second = open_watch(stub, task_id), open_watch(stub, task_id)
        assert next(first).status.state == pb.TASK_STATE_PENDING
        assert next(second).status.state == pb.TASK_STATE_PENDING
        # Workers never subscribe: the one subscriber is the gateway, shared by both streams.
        poll(lambda: subscribers(client, task_id) == 1, "the gateway's subscription")
        first.cancel()
        assert call_error(lambda: next(first)).code() == grpc.StatusCode.CANCELLED
        # The other stream still watches, through the same subscription...
        stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
        assert [message.status.state for message in second] == [pb.TASK_STATE_REVOKED]
        # ...and once neither does, the gateway unsubscribes.
        poll(lambda: subscribers(client, task_id) == 0, "the subscription freed", timeout=5)


def test_cancelling_the_only_stream_unsubscribes_the_gateway(
    stub: pb_grpc.TaskServiceStub, redis_server: RedisServer
) -> None:
    task_id = submit(stub, "tasks.add", 1, 1, options=pb.SubmitOptions(countdown=seconds(30)))
    with redis_server.client() as client:
        stream = open_watch(stub, task_id)
        next(stream)
        poll(lambda: subscribers(client, task_id) == 1, "the gateway's subscription")
        stream.cancel()
        poll(lambda: subscribers(client, task_id) == 0, "the subscription freed", timeout=5)
    stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)


def test_watching_an_unknown_id_is_not_found(stub: pb_grpc.TaskServiceStub) -> None:
    unknown = str(uuid.uuid4())
    error = call_error(lambda: watch(stub, unknown))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert unknown in (error.details() or "")


def test_watching_a_malformed_id_is_invalid_argument(stub: pb_grpc.TaskServiceStub) -> None:
    assert violated_fields(call_error(lambda: watch(stub, "not-a-uuid"))) == ["task_id"]


def test_watching_a_task_that_stores_no_result_is_failed_precondition(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    # ListTasks waits for the gateway's first view of the workers, which says ignore_result.
    stub.ListTasks(pb.ListTasksRequest(), timeout=10)
    task_id = submit(stub, "tasks.subtraction", 5, 3)
    error = call_error(lambda: watch(stub, task_id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    info = detail(rich_status(error), error_details_pb2.ErrorInfo)
    assert info.reason == "RESULT_IGNORED"
