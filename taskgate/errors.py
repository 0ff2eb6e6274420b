"""The exceptions the clients raise, one per gRPC status code a caller can get.

Every one is a `TaskgateError` carrying the status `code` and the gateway's message;
`from_status` builds the right one from a status and its `google.rpc` details.
"""

from collections.abc import Sequence
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from taskgate._models import ExceptionInfo
from taskgate.v1 import task_service_pb2 as pb


class TaskgateError(Exception):
    """A call the gateway (or the connection to it) answered with a status other than OK.

    Every constructor argument goes into `args`, so that the exception pickles whole
    (a Celery task that calls taskgate may raise it).
    """

    def __init__(self, code: grpc.StatusCode, message: str, *extra: object) -> None:
        super().__init__(code, message, *extra)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(TaskgateError):
    """A request field is malformed; `violations` maps each field path to what is wrong."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: dict[str, str]) -> None:
        super().__init__(code, message, violations)
        self.violations = violations


class TaskNotFound(TaskgateError):
    """The task id was never dispatched (or its result expired), or the task name is unknown."""


class IdempotencyKeyReused(TaskgateError):
    """The idempotency key was used for a different request, the one queued as `task_id`."""

    def __init__(self, code: grpc.StatusCode, message: str, task_id: str) -> None:
        super().__init__(code, message, task_id)
        self.task_id = task_id


class FailedPrecondition(TaskgateError):
    """The task is in no state to answer this call."""


class ResultIgnored(FailedPrecondition):
    """The task is declared `ignore_result=True`: it stores no state or result."""


class TaskFailed(FailedPrecondition):
    """With `propagate=True`, the task raised `error` (type, message, module, traceback)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, task_id: str, error: ExceptionInfo
    ) -> None:
        super().__init__(code, message, task_id, error)
        self.task_id = task_id
        self.error = error


class TaskRevoked(TaskFailed):
    """With `propagate=True`, the task was revoked before it could finish."""


class Unauthenticated(TaskgateError):
    """The gateway requires a bearer token and none or a wrong one was sent (`token=`)."""


class PermissionDenied(TaskgateError):
    """The token may not submit this task, or may not cancel."""


class ResourceExhausted(TaskgateError):
    """Over one of the gateway's limits; `retry_after` (seconds) says when to try again."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float | None) -> None:
        super().__init__(code, message, retry_after)
        self.retry_after = retry_after


class Unavailable(TaskgateError):
    """The gateway, or its broker or result backend, cannot be reached right now."""


class DeadlineExceeded(TaskgateError):
    """The call's `timeout` ran out before the gateway answered."""


class InternalError(TaskgateError):
    """A fault in the gateway (it logs the traceback)."""


_PLAIN: dict[grpc.StatusCode, type[TaskgateError]] = {
    grpc.StatusCode.NOT_FOUND: TaskNotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: InternalError,
}
M = TypeVar("M", bound=Message)
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _unpack(details: Sequence[any_pb2.Any], message_type: type[M]) -> M | None:
    for holder in details:
        found = message_type()
        if holder.Unpack(found):
            return found
    return None


def exception_info(error: pb.TaskError) -> ExceptionInfo:
    """A TaskError message as an ExceptionInfo."""
    return ExceptionInfo(error.type, error.message, error.module, error.traceback)


def _failed(code: grpc.StatusCode, status: status_pb2.Status) -> TaskgateError:
    info = _unpack(status.details, error_details_pb2.ErrorInfo)
    reason = info.reason if info else ""
    task_id = info.metadata.get("task_id", "") if info else ""
    task_error = _unpack(status.details, pb.TaskError)
    if reason in ("TASK_FAILED", "TASK_REVOKED") and task_error is not None:
        kind = TaskRevoked if reason == "TASK_REVOKED" else TaskFailed
        return kind(code, status.message, task_id, exception_info(task_error))
    if reason == "RESULT_IGNORED":
        return ResultIgnored(code, status.message)
    return FailedPrecondition(code, status.message)


def from_status(status: status_pb2.Status) -> TaskgateError:
    """The exception for a `google.rpc.Status`: its code, message and details."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = _unpack(status.details, error_details_pb2.BadRequest)
        fields = {v.field: v.description for v in bad.field_violations} if bad else {}
        return InvalidArgument(code, status.message, fields)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        info = _unpack(status.details, error_details_pb2.ErrorInfo)
        task_id = info.metadata.get("task_id", "") if info else ""
        return IdempotencyKeyReused(code, status.message, task_id)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return _failed(code, status)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = _unpack(status.details, error_details_pb2.RetryInfo)
        delay = retry.retry_delay.ToTimedelta().total_seconds() if retry else None
        return ResourceExhausted(code, status.message, delay)
    return _PLAIN.get(code, TaskgateError)(code, status.message)


def from_rpc_error(error: grpc.RpcError) -> TaskgateError:
    """The exception for a failed call, sync or `grpc.aio`, read from its rich status."""
    call: grpc.Call = error  # type: ignore[assignment]  # every RpcError raised by a call is one
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # details that contradict the status line: trust the status line
        status = None
    if status is None:  # no details: a status from gRPC itself, not from the gateway
        status = status_pb2.Status(code=call.code().value[0], message=call.details() or "")
    return from_status(status)
