"""GetStatus and GetResult against a real worker: states, failures, waiting and unknown ids."""

import json
import time
import uuid

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, detail, rich_status, violated_fields
from tests.lifecycle_helpers import LONG_WAIT, submit, wait_result


def test_a_failed_task_is_data(stub: pb_grpc.TaskServiceStub) -> None:
    result = wait_result(stub, submit(stub, "tasks.fail", "disk full"))
    assert result.ready
    assert result.state == pb.TASK_STATE_FAILURE
    assert result.WhichOneof("outcome") == "error"
    assert result.error.type == "ValueError"
    assert result.error.message == "disk full"
    assert "Traceback" in result.error.traceback
    assert "ValueError: disk full" in result.error.traceback


def test_propagate_fails_the_call_with_the_task_error(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.fail", "disk full")
    wait_result(stub, task_id)
    error = call_error(lambda: wait_result(stub, task_id, propagate=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ValueError: disk full" in (error.details() or "")
    status = rich_status(error)
    info = detail(status, error_details_pb2.ErrorInfo)
    assert info.reason == "TASK_FAILED"
    assert info.metadata["task_id"] == task_id
    task_error = detail(status, pb.TaskError)
    assert (task_error.type, task_error.message) == ("ValueError", "disk full")
    assert "Traceback" in task_error.traceback


def test_propagate_returns_a_success_normally(stub: pb_grpc.TaskServiceStub) -> None:
    result = wait_result(stub, submit(stub, "tasks.add", 20, 22), propagate=True)
    assert result.result_json == "42"


def test_get_status_after_success(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.add", 1, 2)
    wait_result(stub, task_id)
    status = stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=10)
    assert (status.task_id, status.state, status.state_name) == (
        task_id,
        pb.TASK_STATE_SUCCESS,
        "SUCCESS",
    )
    assert status.meta_json == ""


def test_progress_meta_is_reported_while_the_task_runs(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.progress", 4, 0.3)
    seen: list[dict[str, int]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=10)
        if status.state == pb.TASK_STATE_SUCCESS:
            break
        if status.state == pb.TASK_STATE_CUSTOM:
            assert status.state_name == "PROGRESS"
            seen.append(json.loads(status.meta_json))
        time.sleep(0.05)
    assert seen, "no PROGRESS state was observed"
    assert all(meta["total"] == 4 and 1 <= meta["current"] <= 4 for meta in seen)
    assert wait_result(stub, task_id).result_json == "4"


def test_a_running_task_is_started(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.sleep", 1.0)
    deadline = time.monotonic() + 20
    state = pb.TASK_STATE_UNSPECIFIED
    while time.monotonic() < deadline and state != pb.TASK_STATE_STARTED:
        state = stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=10).state
        time.sleep(0.02)
    assert state == pb.TASK_STATE_STARTED


def test_wait_returns_as_soon_as_the_task_finishes(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.sleep", 0.5)
    started = time.monotonic()
    result = wait_result(stub, task_id)
    elapsed = time.monotonic() - started
    assert result.ready
    assert result.result_json == "0.5"
    # Woken by the backend's notification, not by the end of the 20 s wait.
    assert elapsed < 10


def test_wait_expiry_answers_not_ready_after_the_wait(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.sleep", 3)
    started = time.monotonic()
    request = pb.GetResultRequest(task_id=task_id, wait=Duration(nanos=700_000_000))
    result = stub.GetResult(request, timeout=10)
    elapsed = time.monotonic() - started
    assert not result.ready
    assert result.WhichOneof("outcome") is None
    assert result.state in (pb.TASK_STATE_PENDING, pb.TASK_STATE_STARTED)
    assert 0.7 <= elapsed < 2.5


def test_wait_never_runs_past_the_deadline(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.sleep", 3)
    started = time.monotonic()
    request = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=60))
    result = stub.GetResult(request, timeout=1.0)
    elapsed = time.monotonic() - started
    assert not result.ready
    assert elapsed < 1.0


def test_without_wait_get_result_answers_at_once(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.sleep", 3)
    started = time.monotonic()
    result = stub.GetResult(pb.GetResultRequest(task_id=task_id), timeout=10)
    assert not result.ready
    assert time.monotonic() - started < 1.0


def test_unknown_ids_are_not_found(stub: pb_grpc.TaskServiceStub) -> None:
    unknown = str(uuid.uuid4())
    for call in (
        lambda: stub.GetStatus(pb.GetStatusRequest(task_id=unknown), timeout=10),
        lambda: stub.GetResult(pb.GetResultRequest(task_id=unknown, wait=LONG_WAIT), timeout=10),
    ):
        error = call_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert unknown in (error.details() or "")


@pytest.mark.parametrize("task_id", ["", "42", "not-a-uuid", "../../etc/passwd"])
def test_malformed_ids_are_invalid_argument(stub: pb_grpc.TaskServiceStub, task_id: str) -> None:
    for call in (
        lambda: stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=10),
        lambda: stub.GetResult(pb.GetResultRequest(task_id=task_id), timeout=10),
    ):
        assert violated_fields(call_error(call)) == ["task_id"]


def test_negative_wait_is_invalid_argument(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.add", 1, 1)
    request = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=-1))
    assert violated_fields(call_error(lambda: stub.GetResult(request, timeout=10))) == ["wait"]
