"""Helpers shared by the task-lifecycle tests: submitting, polling with deadlines, extra stacks.

Everything here talks to real processes; a wait is always a poll or a
subscription with a deadline, never a bare sleep.
"""

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import redis
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from scripts.stack import Gateway, ManagedProcess
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

LONG_WAIT = Duration(seconds=20)
CALL_TIMEOUT = 30.0
POLL_SECONDS = 0.02
RESULT_KEY_PREFIX = "celery-task-meta-"


def submit(
    stub: pb_grpc.TaskServiceStub,
    task: str,
    *args: object,
    options: pb.SubmitOptions | None = None,
) -> str:
    """Submit `task(*args)` with `options` and return its id."""
    request = pb.SubmitRequest(task=task, args_json=json.dumps(list(args)), options=options)
    return stub.Submit(request, timeout=10).task_id


def wait_result(
    stub: pb_grpc.TaskServiceStub,
    task_id: str,
    wait: Duration = LONG_WAIT,
    *,
    propagate: bool = False,
) -> pb.GetResultResponse:
    """GetResult with a long wait: the task's outcome once it is ready."""
    request = pb.GetResultRequest(task_id=task_id, wait=wait, propagate=propagate)
    return stub.GetResult(request, timeout=CALL_TIMEOUT)


def execute(
    stub: pb_grpc.TaskServiceStub, task: str, *args: object, options: pb.SubmitOptions | None = None
) -> pb.ExecuteResponse:
    """Execute `task(*args)` and wait up to LONG_WAIT for it."""
    submission = pb.SubmitRequest(task=task, args_json=json.dumps(list(args)), options=options)
    request = pb.ExecuteRequest(submit=submission, wait=LONG_WAIT)
    return stub.Execute(request, timeout=CALL_TIMEOUT)


def get_status(stub: pb_grpc.TaskServiceStub, task_id: str) -> pb.GetStatusResponse:
    """GetStatus of `task_id`."""
    return stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=10)


def poll_status(
    stub: pb_grpc.TaskServiceStub,
    task_id: str,
    until: Callable[[pb.GetStatusResponse], bool],
    what: str,
    timeout: float = 20.0,
) -> pb.GetStatusResponse:
    """Poll GetStatus until `until` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status = get_status(stub, task_id)
        if until(status):
            return status
        assert time.monotonic() < deadline, f"{what} within {timeout}s; last: {status}"
        time.sleep(POLL_SECONDS)


def wait_started(stub: pb_grpc.TaskServiceStub, task_id: str) -> pb.GetStatusResponse:
    """Poll until a worker reports the task STARTED."""
    return poll_status(
        stub, task_id, lambda status: status.state == pb.TASK_STATE_STARTED, "task STARTED"
    )


def poll(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(POLL_SECONDS)


def timestamp(moment: datetime) -> Timestamp:
    """`moment` as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def in_seconds(delay: float) -> datetime:
    """The UTC time `delay` seconds from now, to the microsecond (what a Timestamp keeps)."""
    return datetime.now(UTC) + timedelta(seconds=delay)


def seconds(value: float) -> Duration:
    """A protobuf Duration of `value` seconds."""
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def unix(stamp: Timestamp) -> float:
    """A Timestamp as Unix seconds."""
    return stamp.ToNanoseconds() / 1e9


def node_name(worker: ManagedProcess) -> str:
    """The worker's Celery node name ("<name>@<host>"), as it announced itself when ready."""
    match = re.search(rf"({re.escape(worker.name)}@\S+) ready\.", worker.log_text())
    assert match is not None, f"{worker.name} never said it was ready"
    return match.group(1)


def result_channel(task_id: str) -> str:
    """The Redis key, and pub/sub channel, where Celery stores the task's state."""
    return RESULT_KEY_PREFIX + task_id


def subscribers(client: redis.Redis, task_id: str) -> int:
    """How many clients are subscribed to the task's result channel (workers never are)."""
    counts = client.pubsub_numsub(result_channel(task_id))
    return int(counts[0][1])


def assert_nothing_published(client: redis.Redis, task_id: str, window: float) -> None:
    """Listen on the task's channel for `window` seconds; fail at once if any state is stored.

    Used to show that something does not happen (a revoked task running anyway):
    the subscription wakes the moment a worker stores a state.
    """
    with client.pubsub() as pubsub:  # type: ignore[no-untyped-call]
        pubsub.subscribe(result_channel(task_id))
        deadline = time.monotonic() + window
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            assert message is None, f"a state was stored for {task_id}: {message['data']!r}"


def count_in_log(worker: ManagedProcess, text: str) -> int:
    """How many times `text` occurs in the worker's log."""
    return worker.log_text().count(text)


@contextmanager
def gateway_stub(gateway: Gateway) -> Iterator[pb_grpc.TaskServiceStub]:
    """A TaskService client for `gateway`, over a channel closed afterwards."""
    with grpc.insecure_channel(gateway.address) as channel:
        yield pb_grpc.TaskServiceStub(channel)


def decoded(result_json: str) -> Any:
    """The JSON text of a result, decoded."""
    return json.loads(result_json)
