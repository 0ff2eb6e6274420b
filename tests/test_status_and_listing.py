"""GetStatus's details, ignore_result tasks, and ListTasks, against real workers."""

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from scripts.stack import Gateway, ManagedProcess
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, detail, rich_status
from tests.lifecycle_helpers import (
    LONG_WAIT,
    execute,
    gateway_stub,
    get_status,
    node_name,
    seconds,
    submit,
    unix,
    wait_result,
    wait_started,
)

BUNDLED = (
    "tasks.add",
    "tasks.echo_request",
    "tasks.fail",
    "tasks.progress",
    "tasks.retry",
    "tasks.sleep",
    "tasks.subtraction",
)


def test_status_of_a_finished_task(stub: pb_grpc.TaskServiceStub, worker: ManagedProcess) -> None:
    before = time.time()
    task_id = execute(stub, "tasks.add", 2, 3).task_id
    after = time.time()
    status = get_status(stub, task_id)
    assert (status.task_id, status.task) == (task_id, "tasks.add")
    assert (status.state, status.state_name) == (pb.TASK_STATE_SUCCESS, "SUCCESS")
    assert before <= unix(status.submitted_at) <= unix(status.date_done) <= after
    assert status.worker == node_name(worker)
    assert status.retries == 0
    assert status.meta_json == ""


def test_status_of_a_running_task(stub: pb_grpc.TaskServiceStub, worker: ManagedProcess) -> None:
    task_id = submit(stub, "tasks.sleep", 1.0)
    running = wait_started(stub, task_id)
    seen_running = time.time()
    assert (running.state_name, running.task) == ("STARTED", "tasks.sleep")
    assert running.HasField("submitted_at")
    assert not running.HasField("date_done")
    assert running.worker == node_name(worker)
    assert wait_result(stub, task_id).ready
    done = get_status(stub, task_id)
    assert done.state == pb.TASK_STATE_SUCCESS
    assert unix(done.date_done) >= seen_running
    assert done.submitted_at == running.submitted_at


def test_status_of_a_task_not_yet_started(stub: pb_grpc.TaskServiceStub) -> None:
    options = pb.SubmitOptions(countdown=seconds(30))
    before = time.time()
    task_id = submit(stub, "tasks.add", 1, 1, options=options)
    status = get_status(stub, task_id)
    assert (status.state, status.state_name, status.task) == (
        pb.TASK_STATE_PENDING,
        "PENDING",
        "tasks.add",
    )
    assert before <= unix(status.submitted_at) <= time.time()
    assert not status.HasField("date_done")
    assert status.worker == ""
    stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)


def test_status_counts_the_retries(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = submit(stub, "tasks.retry", 2, 0.1)
    assert wait_result(stub, task_id).result_json == "2"
    status = get_status(stub, task_id)
    assert (status.state, status.retries) == (pb.TASK_STATE_SUCCESS, 2)


def _assert_result_ignored(error: grpc.RpcError, task_id: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    info = detail(rich_status(error), error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["task_id"]) == ("RESULT_IGNORED", task_id)


def test_a_task_that_stores_no_result_is_failed_precondition(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    # ListTasks waits for the gateway's first view of the workers, which says ignore_result.
    stub.ListTasks(pb.ListTasksRequest(), timeout=10)
    task_id = submit(stub, "tasks.subtraction", 5, 3)
    started = time.monotonic()
    get_result = pb.GetResultRequest(task_id=task_id, wait=LONG_WAIT)
    _assert_result_ignored(call_error(lambda: stub.GetResult(get_result, timeout=30)), task_id)
    assert time.monotonic() - started < 5, "GetResult waited for a result that never comes"
    _assert_result_ignored(call_error(lambda: get_status(stub, task_id)), task_id)


def _tasks_by_name(stub: pb_grpc.TaskServiceStub) -> dict[str, pb.TaskInfo]:
    response = stub.ListTasks(pb.ListTasksRequest(), timeout=10)
    names = [task.name for task in response.tasks]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert response.HasField("workers_checked_at")
    return {task.name: task for task in response.tasks}


def test_list_tasks_shows_the_bundled_tasks_and_their_workers(
    stub: pb_grpc.TaskServiceStub, worker: ManagedProcess
) -> None:
    tasks = _tasks_by_name(stub)
    assert set(BUNDLED) <= set(tasks)
    for name in BUNDLED:
        assert node_name(worker) in tasks[name].workers, name
        assert tasks[name].ignore_result == (name == "tasks.subtraction"), name
    assert not [name for name in tasks if name.startswith("celery.")]


@pytest.fixture(scope="module")
def billing_catalog(
    stack_env: dict[str, str], stack_dir: Path, worker: ManagedProcess
) -> Iterator[pb_grpc.TaskServiceStub]:
    """A gateway whose catalog also names a task no worker serves."""
    gateway = Gateway({**stack_env, "TASKGATE_TASKS": "tasks.*, billing.invoice"}, stack_dir)
    try:
        with gateway_stub(gateway) as stub:
            yield stub
    finally:
        gateway.stop()


def test_list_tasks_shows_a_catalog_task_that_no_worker_serves(
    billing_catalog: pb_grpc.TaskServiceStub, worker: ManagedProcess
) -> None:
    tasks = _tasks_by_name(billing_catalog)
    assert list(tasks["billing.invoice"].workers) == []
    assert not tasks["billing.invoice"].ignore_result
    assert node_name(worker) in tasks["tasks.add"].workers
    assert not [name for name in tasks if name.startswith("celery.")]


def test_a_task_no_worker_knows_fails_on_a_queue_a_worker_consumes(
    billing_catalog: pb_grpc.TaskServiceStub,
) -> None:
    # As TaskInfo.workers says: the worker on the default queue takes it and refuses it.
    task_id = submit(billing_catalog, "billing.invoice")
    request = pb.GetResultRequest(task_id=task_id, wait=seconds(10))
    result = billing_catalog.GetResult(request, timeout=20)
    assert (result.ready, result.state) == (True, pb.TASK_STATE_FAILURE), result
    assert result.error.type == "NotRegistered"
