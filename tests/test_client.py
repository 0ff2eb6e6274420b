"""taskgate.Client against the session's real gateway and worker: every method, as a
Python caller sees it (values, dataclasses, exceptions), with no stub in sight."""

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import grpc
import pytest

import taskgate
from scripts.stack import REPO_ROOT, Gateway
from taskgate import Submission, TaskState


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[taskgate.Client]:
    with taskgate.Client(gateway.address) as made:
        yield made


def test_submit_then_result_returns_the_value(client: taskgate.Client) -> None:
    submitted = client.submit("tasks.add", [2, 3])
    assert not submitted.deduplicated
    result = client.result(submitted.task_id, wait=10)
    assert result == taskgate.TaskResult(submitted.task_id, TaskState.SUCCESS, True, 5, None)


def test_arguments_and_results_keep_their_python_types(client: taskgate.Client) -> None:
    result = client.execute("tasks.add", kwargs={"x": [1, "a"], "y": [None, 2**70]}, wait=10)
    assert result.value == [1, "a", None, 2**70]


def test_execute_with_a_wait_that_runs_out_is_not_ready(client: taskgate.Client) -> None:
    result = client.execute("tasks.sleep", [1.5], wait=0.1)
    assert (result.ready, result.value, result.error) == (False, None, None)
    assert client.result(result.task_id, wait=10).value == 1.5


def test_status_describes_a_finished_task(client: taskgate.Client) -> None:
    before = datetime.now(UTC)
    task_id = client.execute("tasks.add", [1, 1], wait=10).task_id
    status = client.status(task_id)
    assert (status.task_id, status.state, status.state_name) == (
        task_id,
        TaskState.SUCCESS,
        "SUCCESS",
    )
    assert (status.task, status.meta, status.ready, status.retries) == ("tasks.add", None, True, 0)
    assert status.submitted_at is not None
    assert status.date_done is not None
    assert before.replace(microsecond=0) <= status.submitted_at <= status.date_done
    assert status.worker
    assert status.worker.startswith("worker-")


def test_watch_yields_each_progress_step_then_success(client: taskgate.Client) -> None:
    task_id = client.submit("tasks.progress", [3, 0.2]).task_id
    states = list(client.watch(task_id, timeout=30))
    progress = [status.progress for status in states if status.state == TaskState.CUSTOM]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert {status.state_name for status in states if status.state == TaskState.CUSTOM} == {
        "PROGRESS"
    }
    assert (states[-1].state, states[-1].ready) == (TaskState.SUCCESS, True)
    assert [status.ready for status in states].count(True) == 1


def test_a_failed_task_is_in_the_result(client: taskgate.Client) -> None:
    result = client.execute("tasks.fail", ["disk full"], wait=10)
    assert (result.state, result.ready, result.value) == (TaskState.FAILURE, True, None)
    assert result.error is not None
    assert (result.error.type, result.error.module, result.error.message) == (
        "ValueError",
        "builtins",
        "disk full",
    )


def test_a_failed_task_raises_task_failed_with_its_traceback(client: taskgate.Client) -> None:
    task_id = client.submit("tasks.fail", ["disk full"]).task_id
    with pytest.raises(taskgate.TaskFailed) as caught:
        client.result(task_id, wait=10, propagate=True)
    failed = caught.value
    assert (failed.code, failed.task_id) == (grpc.StatusCode.FAILED_PRECONDITION, task_id)
    assert (failed.error.type, failed.error.module) == ("ValueError", "builtins")
    assert failed.error.message == "disk full"
    assert "Traceback (most recent call last)" in failed.error.traceback
    assert "raise ValueError(message)" in failed.error.traceback


def test_execute_with_propagate_raises_task_failed(client: taskgate.Client) -> None:
    with pytest.raises(taskgate.TaskFailed) as caught:
        client.execute("tasks.fail", ["no"], wait=10, propagate=True)
    assert not isinstance(caught.value, taskgate.TaskRevoked)
    assert caught.value.error.message == "no"


@pytest.mark.parametrize("method", ["status", "result", "cancel", "watch"])
def test_an_unknown_task_id_is_task_not_found(client: taskgate.Client, method: str) -> None:
    unknown = str(uuid.uuid4())
    calls: dict[str, Callable[[], object]] = {
        "status": lambda: client.status(unknown),
        "result": lambda: client.result(unknown),
        "cancel": lambda: client.cancel(unknown),
        "watch": lambda: list(client.watch(unknown, timeout=10)),
    }
    with pytest.raises(taskgate.TaskNotFound) as caught:
        calls[method]()
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert isinstance(caught.value, taskgate.TaskgateError)


def test_a_task_outside_the_catalog_is_task_not_found(client: taskgate.Client) -> None:
    with pytest.raises(taskgate.TaskNotFound):
        client.submit("billing.charge")


def test_a_malformed_option_is_invalid_argument_naming_the_field(client: taskgate.Client) -> None:
    with pytest.raises(taskgate.InvalidArgument) as caught:
        client.submit("tasks.add", [1, 2], countdown=-1)
    assert list(caught.value.violations) == ["options.countdown"]


def test_a_task_that_ignores_results_is_result_ignored(client: taskgate.Client) -> None:
    task_id = client.submit("tasks.subtraction", [3, 1]).task_id
    with pytest.raises(taskgate.ResultIgnored):
        client.status(task_id)


def test_an_idempotency_key_submits_once(client: taskgate.Client) -> None:
    key = f"order-{uuid.uuid4()}"
    first = client.submit("tasks.add", [2, 3], idempotency_key=key)
    again = client.submit("tasks.add", [2, 3], idempotency_key=key)
    assert (again.task_id, first.deduplicated, again.deduplicated) == (first.task_id, False, True)
    with pytest.raises(taskgate.IdempotencyKeyReused) as caught:
        client.submit("tasks.add", [2, 4], idempotency_key=key)
    assert caught.value.task_id == first.task_id


def test_cancel_of_a_queued_task_revokes_it(client: taskgate.Client) -> None:
    task_id = client.submit("tasks.add", [1, 2], countdown=30).task_id
    cancelled = client.cancel(task_id)
    assert cancelled == taskgate.Cancelled(
        task_id, taskgate.CancelOutcome.REVOKED, TaskState.REVOKED
    )
    with pytest.raises(taskgate.TaskRevoked) as caught:
        client.result(task_id, wait=10, propagate=True)
    assert caught.value.error.type == "TaskRevokedError"


def test_tasks_lists_the_catalog_with_its_workers(client: taskgate.Client) -> None:
    catalog = client.tasks()
    tasks = {task.name: task for task in catalog.tasks}
    assert {"tasks.add", "tasks.progress", "tasks.subtraction"} <= set(tasks)
    assert tasks["tasks.add"].workers
    assert not tasks["tasks.add"].ignore_result
    assert tasks["tasks.subtraction"].ignore_result
    assert catalog.workers_checked_at is not None
    assert catalog.unmatched_patterns == ()


def test_submit_batch_reports_each_item(client: taskgate.Client) -> None:
    items = client.submit_batch(
        [
            Submission("tasks.add", (1, 2)),
            Submission("billing.charge"),
            Submission("tasks.add", (3, 4)),
        ]
    )
    assert [item.ok for item in items] == [True, False, True]
    assert isinstance(items[1].error, taskgate.TaskNotFound)
    values = [client.result(item.task_id, wait=10).value for item in items if item.task_id]
    assert values == [3, 7]


def test_a_result_wait_longer_than_the_timeout_ends_not_ready(client: taskgate.Client) -> None:
    task_id = client.submit("tasks.sleep", [2]).task_id
    assert not client.result(task_id, wait=10, timeout=0.5).ready


def test_a_watch_past_its_timeout_raises_deadline_exceeded(client: taskgate.Client) -> None:
    task_id = client.submit("tasks.sleep", [2]).task_id
    with pytest.raises(taskgate.DeadlineExceeded):
        list(client.watch(task_id, timeout=0.5))


def test_the_example_script_prints_5(gateway: Gateway) -> None:
    env = {**os.environ, "TASKGATE_ADDRESS": gateway.address}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "submit.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "5"), done
