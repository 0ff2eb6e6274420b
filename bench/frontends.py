"""The ways to run `tasks.add(x, x)` and get its result back, behind one shape.

Each front end's `call(x)` submits the task, waits for its result and returns
an Outcome with the value as the front end reported it; the runner checks it.
Each one also times its own submission, with the same clock as the runner.
"""

import json
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Protocol

from celery import Celery
from google.protobuf.duration_pb2 import Duration

from bench.http import JsonClient
from taskgate.v1 import task_service_pb2 as pb

if TYPE_CHECKING:  # the async stub class exists only in the generated .pyi
    from taskgate.v1.task_service_pb2_grpc import TaskServiceAsyncStub

TASK = "tasks.add"
MAX_WAITS = 3  # a call that has no result after this many waits counts as failed


class NoResult(Exception):
    """A front end answered, but without the task's result."""


@dataclass(frozen=True)
class Outcome:
    """What a front end returned for one call."""

    value: object
    """The task's result as the caller received it."""

    submit_seconds: float | None
    """How long the submission alone took; None when the front end has no separate one."""


class AsyncFrontEnd(Protocol):
    """A front end driven from an event loop."""

    name: str

    async def call(self, x: int) -> Outcome:
        """Run `tasks.add(x, x)` and return its outcome."""


class CeleryFrontEnd:
    """Raw Celery: `send_task` then `AsyncResult.get`, from one thread."""

    name = "raw Celery"

    def __init__(self, app: Celery, wait_seconds: float) -> None:
        self.app = app
        self.wait_seconds = wait_seconds

    def call(self, x: int) -> Outcome:
        """Run `tasks.add(x, x)` and return its outcome."""
        start = perf_counter()
        result = self.app.send_task(TASK, (x, x))
        submitted = perf_counter() - start
        return Outcome(result.get(timeout=self.wait_seconds * MAX_WAITS), submitted)


class _TaskgateClient:
    """What both taskgate front ends share: the stub, and waiting with GetResult."""

    def __init__(self, stub: "TaskServiceAsyncStub", wait_seconds: float) -> None:
        self._stub = stub
        self._wait = wait_seconds

    async def _result(self, task_id: str, tries: int, submitted: float | None) -> Outcome:
        """Wait with GetResult up to `tries` times; the outcome once the task is ready."""
        wait = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=int(self._wait)))
        for _ in range(tries):
            reply = await self._stub.GetResult(wait, timeout=self._wait + 5)
            if reply.ready:
                return _taskgate_outcome(task_id, reply, submitted)
        raise NoResult(f"task {task_id} not ready after {MAX_WAITS} waits")


class TaskgateFrontEnd(_TaskgateClient):
    """taskgate over gRPC: Submit, then GetResult with a wait."""

    name = "taskgate Submit + GetResult"

    async def call(self, x: int) -> Outcome:
        """Run `tasks.add(x, x)` and return its outcome."""
        start = perf_counter()
        request = pb.SubmitRequest(task=TASK, args_json=json.dumps([x, x]))
        task_id = (await self._stub.Submit(request, timeout=self._wait)).task_id
        return await self._result(task_id, MAX_WAITS, perf_counter() - start)


class TaskgateExecuteFrontEnd(_TaskgateClient):
    """taskgate over gRPC: Execute, which submits and waits in one call."""

    name = "taskgate Execute"

    async def call(self, x: int) -> Outcome:
        """Run `tasks.add(x, x)` and return its outcome."""
        submit = pb.SubmitRequest(task=TASK, args_json=json.dumps([x, x]))
        execute = pb.ExecuteRequest(submit=submit, wait=Duration(seconds=int(self._wait)))
        reply = await self._stub.Execute(execute, timeout=self._wait + 5)
        if reply.ready:
            return _taskgate_outcome(reply.task_id, reply, None)
        return await self._result(reply.task_id, MAX_WAITS - 1, None)


def _taskgate_outcome(
    task_id: str, reply: pb.GetResultResponse | pb.ExecuteResponse, submitted: float | None
) -> Outcome:
    """The value of a finished task as taskgate reported it."""
    if reply.state != pb.TASK_STATE_SUCCESS:
        raise NoResult(f"task {task_id} ended {pb.TaskState.Name(reply.state)}")
    return Outcome(json.loads(reply.result_json), submitted)


class FlowerAsyncApplyFrontEnd:
    """Flower: `POST /api/task/async-apply`, then `GET /api/task/result?timeout=`."""

    name = "Flower async-apply + result"

    def __init__(self, client: JsonClient, wait_seconds: float) -> None:
        self._client = client
        self._wait = wait_seconds

    async def call(self, x: int) -> Outcome:
        """Run `tasks.add(x, x)` and return its outcome."""
        start = perf_counter()
        sent = await self._client.request("POST", f"/api/task/async-apply/{TASK}", {"args": [x, x]})
        submitted = perf_counter() - start
        task_id = sent["task-id"]
        for _ in range(MAX_WAITS):
            reply = await self._client.request(
                "GET", f"/api/task/result/{task_id}?timeout={self._wait}"
            )
            # Flower reads `state` before it waits, so it may still say PENDING next to
            # the result; a reply with a result is a finished task.
            if "result" in reply:
                return Outcome(reply["result"], submitted)
        raise NoResult(f"task {task_id} not ready after {MAX_WAITS} waits")


class FlowerApplyFrontEnd:
    """Flower: `POST /api/task/apply`, which submits and waits in one request."""

    name = "Flower apply"

    def __init__(self, client: JsonClient, wait_seconds: float) -> None:
        self._client = client
        self._wait = wait_seconds

    async def call(self, x: int) -> Outcome:
        """Run `tasks.add(x, x)` and return its outcome."""
        body = {"args": [x, x], "timeout": self._wait * MAX_WAITS}
        reply = await self._client.request("POST", f"/api/task/apply/{TASK}", body)
        if reply.get("state") != "SUCCESS" or "result" not in reply:
            raise NoResult(f"task {reply.get('task-id')} ended {reply.get('state')}")
        return Outcome(reply["result"], None)
