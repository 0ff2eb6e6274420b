"""Submit against a real gateway, worker and Redis: what a caller sees for good and bad input."""

import json
import time
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, violated_fields

WAIT = Duration(seconds=20)


def run(stub: pb_grpc.TaskServiceStub, request: pb.SubmitRequest) -> pb.GetResultResponse:
    """Submit `request` and wait for its result."""
    task_id = stub.Submit(request, timeout=10).task_id
    return stub.GetResult(pb.GetResultRequest(task_id=task_id, wait=WAIT), timeout=30)


def test_add_returns_the_sum_as_json(stub: pb_grpc.TaskServiceStub) -> None:
    result = run(stub, pb.SubmitRequest(task="tasks.add", args_json="[2, 3]"))
    assert result.ready
    assert result.state == pb.TASK_STATE_SUCCESS
    assert result.WhichOneof("outcome") == "result_json"
    assert result.result_json == "5"


def test_large_integers_stay_exact(stub: pb_grpc.TaskServiceStub) -> None:
    # A double would round 2**60 + 1; JSON text carries it exactly.
    result = run(stub, pb.SubmitRequest(task="tasks.add", args_json=f"[{2**60}, 1]"))
    assert result.result_json == str(2**60 + 1)


def test_keyword_arguments_reach_the_task(stub: pb_grpc.TaskServiceStub) -> None:
    kwargs = json.dumps({"x": "abc", "y": "déf"})
    result = run(stub, pb.SubmitRequest(task="tasks.add", kwargs_json=kwargs))
    assert json.loads(result.result_json) == "abcdéf"


def test_each_submit_gets_a_new_task_id(stub: pb_grpc.TaskServiceStub) -> None:
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]")
    ids = {stub.Submit(request, timeout=10).task_id for _ in range(5)}
    assert len(ids) == 5


def _submit(task: str = "tasks.add", args: str = "", kwargs: str = "") -> pb.SubmitRequest:
    return pb.SubmitRequest(task=task, args_json=args, kwargs_json=kwargs)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_submit(task=""), "task"),
        (_submit(task="tasks add"), "task"),
        (_submit(task="tasks.add;rm"), "task"),
        (_submit(task="t" * 256), "task"),
        (_submit(args="[1, 2"), "args_json"),
        (_submit(args='{"x": 1}'), "args_json"),
        (_submit(args="3"), "args_json"),
        (_submit(args="[NaN, 1]"), "args_json"),
        (_submit(args="[" * 100_000), "args_json"),
        (_submit(kwargs="[1, 2]"), "kwargs_json"),
        (_submit(kwargs="{'x': 1}"), "kwargs_json"),
        (_submit(kwargs='"x"'), "kwargs_json"),
    ],
)
def test_malformed_input_is_invalid_argument_naming_the_field(
    stub: pb_grpc.TaskServiceStub, request_: pb.SubmitRequest, field: str
) -> None:
    error = call_error(lambda: stub.Submit(request_, timeout=10))
    assert violated_fields(error) == [field]
    assert field in (error.details() or "")


def _options(**fields: Any) -> pb.SubmitRequest:
    return pb.SubmitRequest(
        task="tasks.add", args_json="[1, 2]", options=pb.SubmitOptions(**fields)
    )


def _timestamp(seconds_from_now: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return stamp


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_options(countdown=Duration(seconds=-1)), "options.countdown"),
        (_options(countdown=Duration(seconds=1), eta=_timestamp(5)), "options.eta"),
        (_options(expires=_timestamp(-60)), "options.expires"),
        (_options(priority=256), "options.priority"),
        (_options(priority=-1), "options.priority"),
        (_options(queue="no spaces"), "options.queue"),
        (_options(headers={"task": "celery.backend_cleanup"}), "options.headers"),
        (_options(headers={"id": "x"}), "options.headers"),
    ],
)
def test_invalid_options_are_invalid_argument(
    stub: pb_grpc.TaskServiceStub, request_: pb.SubmitRequest, field: str
) -> None:
    error = call_error(lambda: stub.Submit(request_, timeout=10))
    assert violated_fields(error) == [field]


@pytest.mark.parametrize(
    "task", ["tasks_elsewhere.add", "celery.backend_cleanup", "celery.chord_unlock"]
)
def test_names_outside_the_catalog_are_not_found(stub: pb_grpc.TaskServiceStub, task: str) -> None:
    error = call_error(lambda: stub.Submit(pb.SubmitRequest(task=task), timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert task in (error.details() or "")
