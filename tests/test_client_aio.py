"""taskgate.AsyncClient against the session's real gateway and worker: each method
answers as the synchronous client's does (tests/test_client.py has the details)."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import pytest

import taskgate
from scripts.stack import Gateway, free_port
from taskgate import Submission, TaskState

T = TypeVar("T")


def run(gateway: Gateway, scenario: Callable[[taskgate.AsyncClient], Awaitable[T]]) -> T:
    """Run `scenario` with a fresh client in a fresh event loop (a channel has one loop)."""

    async def with_client() -> T:
        async with taskgate.AsyncClient(gateway.address) as client:
            return await scenario(client)

    return asyncio.run(with_client())


def test_submit_result_and_status(gateway: Gateway) -> None:
    async def scenario(client: taskgate.AsyncClient) -> tuple[taskgate.TaskResult, TaskState]:
        task_id = (await client.submit("tasks.add", [2, 3])).task_id
        result = await client.result(task_id, wait=10)
        return result, (await client.status(task_id)).state

    result, state = run(gateway, scenario)
    assert (result.value, result.state, state) == (5, TaskState.SUCCESS, TaskState.SUCCESS)


def test_execute_and_many_calls_at_once(gateway: Gateway) -> None:
    async def scenario(client: taskgate.AsyncClient) -> list[object]:
        calls = [client.execute("tasks.add", [n, n], wait=10) for n in range(10)]
        return [result.value for result in await asyncio.gather(*calls)]

    assert run(gateway, scenario) == [2 * n for n in range(10)]


def test_watch_yields_progress_then_success(gateway: Gateway) -> None:
    async def scenario(client: taskgate.AsyncClient) -> list[taskgate.TaskStatus]:
        task_id = (await client.submit("tasks.progress", [2, 0.2])).task_id
        return [status async for status in client.watch(task_id, timeout=30)]

    states = run(gateway, scenario)
    assert [s.progress for s in states if s.state_name == "PROGRESS"] == [(1, 2), (2, 2)]
    assert states[-1].state == TaskState.SUCCESS


def test_a_failed_task_raises_task_failed_with_its_traceback(gateway: Gateway) -> None:
    async def scenario(client: taskgate.AsyncClient) -> taskgate.TaskResult:
        return await client.execute("tasks.fail", ["disk full"], wait=10, propagate=True)

    with pytest.raises(taskgate.TaskFailed) as caught:
        run(gateway, scenario)
    assert (caught.value.error.type, caught.value.error.message) == ("ValueError", "disk full")
    assert "Traceback (most recent call last)" in caught.value.error.traceback


def test_an_unknown_task_id_is_task_not_found(gateway: Gateway) -> None:
    async def scenario(client: taskgate.AsyncClient) -> taskgate.TaskStatus:
        return await client.status(str(uuid.uuid4()))

    with pytest.raises(taskgate.TaskNotFound) as caught:
        run(gateway, scenario)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_an_idempotency_key_submits_once(gateway: Gateway) -> None:
    key = f"order-{uuid.uuid4()}"

    async def scenario(client: taskgate.AsyncClient) -> list[taskgate.Submitted]:
        return [await client.submit("tasks.add", [1, 2], idempotency_key=key) for _ in range(2)]

    first, again = run(gateway, scenario)
    assert (again.task_id, again.deduplicated) == (first.task_id, True)


def test_cancel_tasks_and_submit_batch(gateway: Gateway) -> None:
    async def scenario(
        client: taskgate.AsyncClient,
    ) -> tuple[taskgate.Cancelled, taskgate.TaskCatalog, list[taskgate.BatchItem]]:
        task_id = (await client.submit("tasks.add", [1, 2], countdown=30)).task_id
        cancelled = await client.cancel(task_id)
        batch = await client.submit_batch([Submission("tasks.add", (1, 2)), Submission("x.y")])
        return cancelled, await client.tasks(), batch

    cancelled, catalog, batch = run(gateway, scenario)
    assert cancelled.outcome == taskgate.CancelOutcome.REVOKED
    assert "tasks.add" in {task.name for task in catalog.tasks}
    assert [item.ok for item in batch] == [True, False]
    assert isinstance(batch[1].error, taskgate.TaskNotFound)


def test_a_watch_past_its_timeout_raises_deadline_exceeded(gateway: Gateway) -> None:
    async def scenario(client: taskgate.AsyncClient) -> list[taskgate.TaskStatus]:
        task_id = (await client.submit("tasks.sleep", [2])).task_id
        return [status async for status in client.watch(task_id, timeout=0.5)]

    with pytest.raises(taskgate.DeadlineExceeded):
        run(gateway, scenario)


def test_reads_and_keyed_submits_are_retried_plain_submits_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="taskgate.aio")
    policy = taskgate.RetryPolicy(attempts=3, initial_backoff=0.01)

    async def scenario() -> list[int]:
        retries = []
        async with taskgate.AsyncClient(f"127.0.0.1:{free_port()}", retry=policy) as client:
            for call in (
                client.submit("tasks.add", [1, 2]),
                client.submit("tasks.add", [1, 2], idempotency_key="order-1"),
                client.status(str(uuid.uuid4())),
            ):
                caplog.clear()
                with pytest.raises(taskgate.Unavailable):
                    await call
                retries.append(sum("trying again" in r.getMessage() for r in caplog.records))
        return retries

    assert asyncio.run(scenario()) == [0, 2, 2]
