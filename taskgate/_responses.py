"""Reply messages to the clients' dataclasses: JSON decoded, enums named, times as datetimes."""

import json
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from taskgate._models import (
    BatchItem,
    Cancelled,
    CancelOutcome,
    Submitted,
    TaskCatalog,
    TaskInfo,
    TaskResult,
    TaskState,
    TaskStatus,
)
from taskgate.errors import exception_info, from_status
from taskgate.v1 import task_service_pb2 as pb

_PREFIX = len("TASK_STATE_")


def task_state(value: int) -> TaskState:
    """The TaskState for a proto `TaskState` number."""
    return TaskState(pb.TaskState.Name(value)[_PREFIX:])  # type: ignore[arg-type]


def _time(holder: Message, name: str) -> datetime | None:
    if not holder.HasField(name):
        return None
    stamp: Timestamp = getattr(holder, name)
    return stamp.ToDatetime(tzinfo=UTC)


def submitted(reply: pb.SubmitResponse) -> Submitted:
    """Submit's reply."""
    return Submitted(reply.task_id, reply.deduplicated)


def status(reply: pb.GetStatusResponse) -> TaskStatus:
    """GetStatus's reply, and each WatchStatus message's."""
    return TaskStatus(
        task_id=reply.task_id,
        state=task_state(reply.state),
        state_name=reply.state_name,
        meta=json.loads(reply.meta_json) if reply.meta_json else None,
        task=reply.task,
        submitted_at=_time(reply, "submitted_at"),
        date_done=_time(reply, "date_done"),
        retries=reply.retries,
        worker=reply.worker or None,
    )


def result(reply: pb.GetResultResponse | pb.ExecuteResponse) -> TaskResult:
    """GetResult's or Execute's reply."""
    outcome = reply.WhichOneof("outcome")
    return TaskResult(
        task_id=reply.task_id,
        state=task_state(reply.state),
        ready=reply.ready,
        value=json.loads(reply.result_json) if outcome == "result_json" else None,
        error=exception_info(reply.error) if outcome == "error" else None,
    )


def batch(reply: pb.SubmitBatchResponse) -> list[BatchItem]:
    """SubmitBatch's reply, one item per submission in order."""
    return [
        BatchItem(item.task_id, None)
        if item.WhichOneof("outcome") == "task_id"
        else BatchItem(None, from_status(item.error))
        for item in reply.results
    ]


def cancelled(reply: pb.CancelResponse) -> Cancelled:
    """Cancel's reply."""
    outcome = pb.CancelOutcome.Name(reply.outcome)[len("CANCEL_OUTCOME_") :]
    return Cancelled(reply.task_id, CancelOutcome(outcome), task_state(reply.state))


def catalog(reply: pb.ListTasksResponse) -> TaskCatalog:
    """ListTasks's reply."""
    tasks = tuple(TaskInfo(t.name, tuple(t.workers), t.ignore_result) for t in reply.tasks)
    return TaskCatalog(tasks, _time(reply, "workers_checked_at"), tuple(reply.unmatched_patterns))
