"""What a caller learns of a task's exception: the task's own class and module, its
message, and the worker's traceback only where the operator allows it."""

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, celery_env, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import managed
from tests.grpc_helpers import call_error, detail, rich_status
from tests.lifecycle_helpers import wait_result

DECLINE = pb.SubmitRequest(task="tests.errors.decline", args_json=json.dumps([7, "card expired"]))


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> dict[str, str]:
    """Database 7 (no other test's worker takes these tasks), the domain-error tasks."""
    return celery_env(
        redis_server.db_url(7),
        redis_server.db_url(7),
        TASKGATE_TASK_MODULES="taskgate.worker.tasks,tests.error_tasks",
        TASKGATE_TASKS="tasks.*,tests.*",
    )


@pytest.fixture(scope="module")
def gateways(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, pb_grpc.TaskServiceStub]]:
    """A worker, and two gateways: tracebacks on (the default) and off."""
    tmp_path: Path = tmp_path_factory.mktemp("task-errors")
    with (
        managed(start_worker(env, tmp_path)),
        managed(Gateway(env, tmp_path)) as shown,
        managed(Gateway({**env, "TASKGATE_TRACEBACKS": "off"}, tmp_path)) as withheld,
        grpc.insecure_channel(shown.address) as shown_channel,
        grpc.insecure_channel(withheld.address) as withheld_channel,
    ):
        yield {
            "on": pb_grpc.TaskServiceStub(shown_channel),
            "off": pb_grpc.TaskServiceStub(withheld_channel),
        }


def _failed(stub: pb_grpc.TaskServiceStub) -> pb.TaskError:
    task_id = stub.Submit(DECLINE, timeout=10).task_id
    result = wait_result(stub, task_id)
    assert result.state == pb.TASK_STATE_FAILURE
    return result.error


def test_a_domain_exception_is_reported_as_the_task_raised_it(
    gateways: dict[str, pb_grpc.TaskServiceStub],
) -> None:
    error = _failed(gateways["on"])
    assert (error.module, error.type) == ("tests.error_tasks", "PaymentDeclined")
    assert error.message == "order 7 declined: card expired"
    assert "Traceback" in error.traceback


def test_a_builtin_exception_names_its_module(
    gateways: dict[str, pb_grpc.TaskServiceStub],
) -> None:
    request = pb.SubmitRequest(task="tasks.fail", args_json='["disk full"]')
    error = wait_result(gateways["on"], gateways["on"].Submit(request, timeout=10).task_id).error
    assert (error.module, error.type, error.message) == ("builtins", "ValueError", "disk full")


def test_tracebacks_off_withholds_them_from_results_and_propagated_errors(
    gateways: dict[str, pb_grpc.TaskServiceStub],
) -> None:
    stub = gateways["off"]
    error = _failed(stub)
    assert (error.type, error.message) == ("PaymentDeclined", "order 7 declined: card expired")
    assert error.traceback == ""
    task_id = stub.Submit(DECLINE, timeout=10).task_id
    wait_result(stub, task_id)
    failed = call_error(lambda: wait_result(stub, task_id, propagate=True))
    assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION
    propagated = detail(rich_status(failed), pb.TaskError)
    assert propagated.type == "PaymentDeclined"
    assert propagated.traceback == ""
    assert "error_tasks.py" not in str(failed.details())
