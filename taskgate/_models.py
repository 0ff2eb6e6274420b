"""What the clients return: frozen dataclasses and enums, free of protobuf types."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from taskgate.errors import TaskgateError


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TaskState(StrEnum):
    """A Celery task state; a state the task defined itself (such as PROGRESS) is CUSTOM."""

    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    CUSTOM = "CUSTOM"

    @property
    def ready(self) -> bool:
        """True for the final states: SUCCESS, FAILURE and REVOKED."""
        return self in (TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED)


class CancelOutcome(StrEnum):
    """What a cancel did."""

    REVOKED = "REVOKED"
    TERMINATION_SIGNALLED = "TERMINATION_SIGNALLED"
    STILL_RUNNING = "STILL_RUNNING"
    ALREADY_FINISHED = "ALREADY_FINISHED"


@dataclass(frozen=True)
class ExceptionInfo:
    """The exception a task raised, as its worker reported it."""

    type: str
    message: str
    module: str
    traceback: str
    """Empty when the gateway withholds tracebacks (TASKGATE_TRACEBACKS=off)."""


@dataclass(frozen=True)
class Submission:
    """One task to submit: its name, arguments as Python values and calling options."""

    task: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    countdown: float | timedelta | None = None
    eta: datetime | None = None
    expires: datetime | float | timedelta | None = None
    """A time, or seconds from now, after which the task is discarded unstarted."""
    priority: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    """Makes a retried submission safe: the gateway queues the task once per key."""


@dataclass(frozen=True)
class Submitted:
    """A queued task; `deduplicated` when its idempotency key matched an earlier submission."""

    task_id: str
    deduplicated: bool


@dataclass(frozen=True)
class TaskStatus:
    """A task's state at one moment, with what the backend knows about it."""

    task_id: str
    state: TaskState
    state_name: str
    """Celery's own name for the state, such as "PROGRESS" for a CUSTOM state."""
    meta: Any
    """A custom state's meta, decoded from JSON; None for the built-in states."""
    task: str
    submitted_at: datetime | None
    date_done: datetime | None
    retries: int
    worker: str | None

    @property
    def ready(self) -> bool:
        """True once the task has finished."""
        return self.state.ready

    @property
    def progress(self) -> tuple[float, float] | None:
        """(current, total) from a meta that has both as numbers, else None."""
        if not isinstance(self.meta, dict):
            return None
        current, total = self.meta.get("current"), self.meta.get("total")
        if _is_number(current) and _is_number(total):
            return (current, total)
        return None


@dataclass(frozen=True)
class TaskResult:
    """A task's outcome, or its state while it has none (`ready` False)."""

    task_id: str
    state: TaskState
    ready: bool
    value: Any
    """The task's return value, decoded from JSON; None unless it succeeded."""
    error: ExceptionInfo | None
    """Why the task failed or was revoked; None otherwise."""

    @property
    def succeeded(self) -> bool:
        """True when the task finished with a value."""
        return self.state == TaskState.SUCCESS


@dataclass(frozen=True)
class BatchItem:
    """One submission's outcome in a batch: a task id, or the error Submit would have raised."""

    task_id: str | None
    error: "TaskgateError | None"

    @property
    def ok(self) -> bool:
        """True when the task was queued."""
        return self.error is None


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did, and the task's state after it."""

    task_id: str
    outcome: CancelOutcome
    state: TaskState


@dataclass(frozen=True)
class TaskInfo:
    """A task this caller may submit, and the live workers serving it."""

    name: str
    workers: tuple[str, ...]
    ignore_result: bool


@dataclass(frozen=True)
class TaskCatalog:
    """The tasks this caller may submit, as the gateway last heard from the workers."""

    tasks: tuple[TaskInfo, ...]
    workers_checked_at: datetime | None
    unmatched_patterns: tuple[str, ...]
    """Catalog patterns that match no task a live worker serves (often a typo)."""
