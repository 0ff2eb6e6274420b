"""Execute and SubmitBatch against a real worker: one-call results, partial failures, limits."""

import json
import uuid

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, detail, rich_status, violated_fields
from tests.lifecycle_helpers import CALL_TIMEOUT, LONG_WAIT, execute, seconds, wait_result


def _execute(
    stub: pb_grpc.TaskServiceStub,
    request: pb.SubmitRequest,
    wait: Duration | None = None,
    *,
    propagate: bool = False,
) -> pb.ExecuteResponse:
    execute_request = pb.ExecuteRequest(submit=request, wait=wait, propagate=propagate)
    return stub.Execute(execute_request, timeout=CALL_TIMEOUT)


def test_execute_returns_the_result_in_one_call(stub: pb_grpc.TaskServiceStub) -> None:
    response = execute(stub, "tasks.add", 2, 3)
    assert (response.ready, response.state) == (True, pb.TASK_STATE_SUCCESS)
    assert response.WhichOneof("outcome") == "result_json"
    assert response.result_json == "5"
    assert wait_result(stub, response.task_id).result_json == "5"


def test_execute_whose_wait_runs_out_returns_the_id_to_go_on_with(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    request = pb.SubmitRequest(task="tasks.sleep", args_json="[1.5]")
    response = _execute(stub, request, wait=seconds(0.3))
    assert not response.ready
    assert response.WhichOneof("outcome") is None
    assert response.state in (pb.TASK_STATE_PENDING, pb.TASK_STATE_STARTED)
    result = wait_result(stub, response.task_id)
    assert (result.state, result.result_json) == (pb.TASK_STATE_SUCCESS, "1.5")


def test_execute_without_a_wait_answers_at_once_with_the_id(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    request = pb.SubmitRequest(task="tasks.sleep", args_json="[1]")
    response = _execute(stub, request)
    assert not response.ready
    assert response.state in (pb.TASK_STATE_PENDING, pb.TASK_STATE_STARTED)
    assert wait_result(stub, response.task_id).result_json == "1"


def test_execute_retried_with_its_key_returns_the_first_task_and_its_result(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    request = pb.SubmitRequest(
        task="tasks.add", args_json="[20, 22]", idempotency_key=f"execute-{uuid.uuid4()}"
    )
    first = _execute(stub, request, wait=LONG_WAIT)
    again = _execute(stub, request, wait=LONG_WAIT)
    assert again.task_id == first.task_id
    assert (first.result_json, again.result_json) == ("42", "42")


def test_execute_of_a_task_that_stores_no_result_is_failed_precondition_at_once(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    # ListTasks waits for the gateway's first view of the workers, which says ignore_result.
    stub.ListTasks(pb.ListTasksRequest(), timeout=10)
    request = pb.SubmitRequest(task="tasks.subtraction", args_json="[5, 3]")
    error = call_error(lambda: _execute(stub, request, wait=LONG_WAIT))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = detail(rich_status(error), error_details_pb2.ErrorInfo)
    assert info.reason == "RESULT_IGNORED"
    assert info.metadata["task_id"]


def test_execute_reports_a_failure_as_data(stub: pb_grpc.TaskServiceStub) -> None:
    response = execute(stub, "tasks.fail", "disk full")
    assert (response.ready, response.state) == (True, pb.TASK_STATE_FAILURE)
    assert (response.error.type, response.error.message) == ("ValueError", "disk full")


def test_execute_with_propagate_fails_the_call_with_the_task_error(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    request = pb.SubmitRequest(task="tasks.fail", args_json='["disk full"]')
    error = call_error(lambda: _execute(stub, request, wait=LONG_WAIT, propagate=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rich_status(error)
    info = detail(status, error_details_pb2.ErrorInfo)
    assert info.reason == "TASK_FAILED"
    task_error = detail(status, pb.TaskError)
    assert (task_error.type, task_error.message) == ("ValueError", "disk full")
    # The task id in the details leads to the same failure through GetResult.
    failed = wait_result(stub, info.metadata["task_id"])
    assert (failed.state, failed.error.message) == (pb.TASK_STATE_FAILURE, "disk full")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SubmitRequest(task="tasks.add", args_json="[1,"), "args_json"),
        (pb.SubmitRequest(task="tasks.add", kwargs_json="[]"), "kwargs_json"),
        (pb.SubmitRequest(task=""), "task"),
    ],
)
def test_execute_with_bad_input_is_invalid_argument_naming_the_field(
    stub: pb_grpc.TaskServiceStub, request_: pb.SubmitRequest, field: str
) -> None:
    error = call_error(lambda: _execute(stub, request_, wait=LONG_WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (named,) = violated_fields(error)
    assert named.endswith(field)


def test_execute_names_the_bad_field_by_its_path_in_the_request(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    request = pb.SubmitRequest(task="tasks.add", args_json="[1,")
    error = call_error(lambda: _execute(stub, request, wait=LONG_WAIT))
    assert violated_fields(error) == ["submit.args_json"]


def test_execute_with_a_negative_wait_is_invalid_argument(stub: pb_grpc.TaskServiceStub) -> None:
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
    error = call_error(lambda: _execute(stub, request, wait=seconds(-1)))
    assert violated_fields(error) == ["wait"]


def test_execute_of_a_task_outside_the_catalog_is_not_found(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    error = call_error(lambda: _execute(stub, pb.SubmitRequest(task="billing.invoice")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def _add(x: int, y: int) -> pb.SubmitRequest:
    return pb.SubmitRequest(task="tasks.add", args_json=json.dumps([x, y]))


def _field_violations(status: status_pb2.Status) -> list[str]:
    bad_request = detail(status, error_details_pb2.BadRequest)
    return [violation.field for violation in bad_request.field_violations]


def test_a_batch_runs_its_good_items_and_refuses_each_bad_one(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    requests = [
        _add(1, 2),
        pb.SubmitRequest(task="tasks.add", args_json="[1,"),
        pb.SubmitRequest(task="billing.invoice", args_json="[]"),
        _add(10, 20),
        pb.SubmitRequest(task="tasks.add", kwargs_json='"x"'),
        pb.SubmitRequest(task="celery.backend_cleanup"),
        _add(100, 200),
    ]
    results = stub.SubmitBatch(pb.SubmitBatchRequest(requests=requests), timeout=10).results
    assert [result.WhichOneof("outcome") for result in results] == [
        "task_id", "error", "error", "task_id", "error", "error", "task_id",
    ]  # fmt: skip
    ids = [results[i].task_id for i in (0, 3, 6)]
    assert len(set(ids)) == 3
    assert [wait_result(stub, task_id).result_json for task_id in ids] == ["3", "30", "300"]
    assert results[1].error.code == code_pb2.INVALID_ARGUMENT
    assert _field_violations(results[1].error) == ["requests[1].args_json"]
    assert results[4].error.code == code_pb2.INVALID_ARGUMENT
    assert _field_violations(results[4].error) == ["requests[4].kwargs_json"]
    for index, name in ((2, "billing.invoice"), (5, "celery.backend_cleanup")):
        assert results[index].error.code == code_pb2.NOT_FOUND
        assert name in results[index].error.message


def test_a_batch_mixes_keyed_items_own_retry_policies_and_plain_ones(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    """Plain items go out together, keyed ones claim their key, those with a retry
    policy of their own publish alone: each keeps its place and runs once."""
    key = f"batch-{uuid.uuid4()}"
    keyed = pb.SubmitRequest(task="tasks.add", args_json="[2, 2]", idempotency_key=key)
    first = stub.Submit(keyed, timeout=10).task_id
    own_policy = pb.SubmitOptions(retry_policy=pb.PublishRetryPolicy(max_retries=1))
    requests = [
        _add(1, 1),
        keyed,
        pb.SubmitRequest(task="tasks.add", args_json="[3, 3]", options=own_policy),
        _add(4, 4),
    ]
    results = stub.SubmitBatch(pb.SubmitBatchRequest(requests=requests), timeout=10).results
    assert results[1].task_id == first, "the key's earlier task"
    ids = [result.task_id for result in results]
    assert len(set(ids)) == 4
    assert [wait_result(stub, task_id).result_json for task_id in ids] == ["2", "4", "6", "8"]


def test_a_batch_keeps_the_order_of_its_items(stub: pb_grpc.TaskServiceStub) -> None:
    requests = [_add(i, 1000) for i in range(50)]
    results = stub.SubmitBatch(pb.SubmitBatchRequest(requests=requests), timeout=10).results
    sums = [wait_result(stub, result.task_id).result_json for result in results]
    assert sums == [str(i + 1000) for i in range(50)]


def test_a_full_batch_is_queued_whole(stub: pb_grpc.TaskServiceStub) -> None:
    # A queue no worker consumes: only the publishing is under test.
    unconsumed = pb.SubmitOptions(queue="batch-limit-unconsumed")
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]", options=unconsumed)
    batch = pb.SubmitBatchRequest(requests=[request] * 1000)
    results = stub.SubmitBatch(batch, timeout=30).results
    refused = [result.error for result in results if result.WhichOneof("outcome") == "error"]
    assert not refused, f"{len(refused)} of 1000 refused; first: {refused[0]}"
    assert len({result.task_id for result in results}) == 1000


def test_an_empty_batch_is_invalid_argument(stub: pb_grpc.TaskServiceStub) -> None:
    error = call_error(lambda: stub.SubmitBatch(pb.SubmitBatchRequest(), timeout=10))
    assert violated_fields(error) == ["requests"]


def test_a_batch_over_the_limit_is_invalid_argument(stub: pb_grpc.TaskServiceStub) -> None:
    requests = [_add(i, i) for i in range(1001)]
    error = call_error(
        lambda: stub.SubmitBatch(pb.SubmitBatchRequest(requests=requests), timeout=10)
    )
    assert violated_fields(error) == ["requests"]
    assert "1000" in (error.details() or "")
