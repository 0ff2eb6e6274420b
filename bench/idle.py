"""Calls that need no worker: Submit alone, SubmitBatch and GetStatus, each checking its answer.

The submissions go to a queue no worker consumes (`IDLE_QUEUE`), so that no worker
competes for the cores; the suite empties it between phases. Each check returns
None when the answer is right, else what was wrong (see `bench.runner.run_checked`).
"""

import json
import uuid
from time import perf_counter
from typing import TYPE_CHECKING

from celery import Celery

from bench.frontends import TASK
from bench.http import JsonClient
from bench.runner import one_at_a_time
from bench.stats import Tally
from taskgate.v1 import task_service_pb2 as pb

if TYPE_CHECKING:  # the async stub class exists only in the generated .pyi
    from taskgate.v1.task_service_pb2_grpc import TaskServiceAsyncStub

IDLE_QUEUE = "bench.idle"
CALL_TIMEOUT = 30.0


def submit_request(x: int) -> pb.SubmitRequest:
    """`tasks.add(x, x)` for the idle queue."""
    return pb.SubmitRequest(
        task=TASK, args_json=json.dumps([x, x]), options=pb.SubmitOptions(queue=IDLE_QUEUE)
    )


def task_id_problem(task_id: object) -> str | None:
    """None for a task id a caller can use (a UUID), else what is wrong with it."""
    try:
        uuid.UUID(str(task_id))
    except ValueError:
        return f"not a task id: {task_id!r}"
    return None


class GrpcSubmit:
    """Submit alone over grpc.aio; the same code for the gateway and the ceiling."""

    def __init__(self, stub: "TaskServiceAsyncStub") -> None:
        self._stub = stub

    async def __call__(self, x: int) -> str | None:
        reply = await self._stub.Submit(submit_request(x), timeout=CALL_TIMEOUT)
        return task_id_problem(reply.task_id)


class FlowerSend:
    """Flower's `POST /api/task/send-task/<name>`, which calls `send_task` by name."""

    def __init__(self, client: JsonClient) -> None:
        self._client = client

    async def __call__(self, x: int) -> str | None:
        body = {"args": [x, x], "queue": IDLE_QUEUE}
        reply = await self._client.request("POST", f"/api/task/send-task/{TASK}", body)
        return task_id_problem(reply.get("task-id"))


class GrpcStatus:
    """GetStatus of one task whose state is known to be SUCCESS."""

    def __init__(self, stub: "TaskServiceAsyncStub", task_id: str) -> None:
        self._stub = stub
        self._request = pb.GetStatusRequest(task_id=task_id)

    async def __call__(self, x: int) -> str | None:
        reply = await self._stub.GetStatus(self._request, timeout=CALL_TIMEOUT)
        if reply.task_id != self._request.task_id or reply.state != pb.TASK_STATE_SUCCESS:
            return f"GetStatus said {pb.TaskState.Name(reply.state)} for {reply.task_id!r}"
        return None


def send_task_loop(app: Celery, xs: list[int], seconds: float) -> Tally:
    """A plain Python loop calling `app.send_task`, one thread, one task in flight."""

    def call(tally: Tally, x: int) -> None:
        start = perf_counter()
        try:
            task_id = app.send_task(TASK, (x, x), queue=IDLE_QUEUE).id
        except Exception as exc:  # a failed call is a result of the benchmark
            tally.fail(exc)
            return
        _record(tally, task_id_problem(task_id), perf_counter() - start)

    return one_at_a_time(xs, seconds, call)


async def submit_batches(
    stub: "TaskServiceAsyncStub", xs: list[int], size: int, seconds: float
) -> Tally:
    """SubmitBatch of `size` items, one call at a time; every item is timed as its call."""
    tally = Tally()
    deadline = perf_counter() + seconds
    started = perf_counter()
    for first in range(0, len(xs), size):
        chunk = xs[first : first + size]
        if perf_counter() > deadline:
            tally.skipped += len(chunk)
            continue
        request = pb.SubmitBatchRequest(requests=[submit_request(x) for x in chunk])
        start = perf_counter()
        try:
            results = (await stub.SubmitBatch(request, timeout=CALL_TIMEOUT)).results
        except Exception as exc:  # a failed call is a result of the benchmark
            for _ in chunk:
                tally.fail(exc)
            continue
        took = perf_counter() - start
        if len(results) != len(chunk):
            tally.record_wrong(f"{len(results)} outcomes for {len(chunk)} items")
            continue
        for result in results:
            _record(tally, _item_problem(result), took)
    tally.elapsed = perf_counter() - started
    return tally


def _item_problem(result: pb.SubmitBatchResult) -> str | None:
    if result.WhichOneof("outcome") == "task_id":
        return task_id_problem(result.task_id)
    return f"item refused: {result.error.message}"


def _record(tally: Tally, problem: str | None, seconds: float) -> None:
    if problem is None:
        tally.record_right(seconds)
    else:
        tally.record_wrong(problem)
