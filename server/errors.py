"""The gateway's exceptions, each tied to the gRPC status code a caller receives.

Domain code raises these; `taskgate.server.interceptors` turns them into statuses in one place.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

ERROR_DOMAIN = "taskgate.v1"


class GatewayError(Exception):
    """Base class: a failure the caller is told about with `code`."""

    code: int = code_pb2.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[Message]:
        """Extra `google.rpc` detail messages for the status; none by default."""
        return []

    def to_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` that carries this error to the caller."""
        packed = []
        for detail in self.details():
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        return status_pb2.Status(code=self.code, message=self.message, details=packed)


class InvalidArgument(GatewayError):
    """A request field is malformed; the field is named in a BadRequest detail."""

    code = code_pb2.INVALID_ARGUMENT

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    def within(self, parent: str) -> "InvalidArgument":
        """The same error, with the field named by its path from `parent`."""
        return InvalidArgument(f"{parent}.{self.field}", self.description)

    def details(self) -> list[Message]:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=self.field, description=self.description
        )
        return [error_details_pb2.BadRequest(field_violations=[violation])]


class NotFound(GatewayError):
    """The task name or task id is unknown to this gateway."""

    code = code_pb2.NOT_FOUND


class TaskReasonError(GatewayError):
    """An error about one task, with an ErrorInfo of a stable `reason` naming the task."""

    def __init__(self, message: str, reason: str, task_id: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.task_id = task_id

    def details(self) -> list[Message]:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata={"task_id": self.task_id}
        )
        return [info]


class IdempotencyKeyReused(TaskReasonError):
    """The idempotency key belongs to a different request; its task id is in the details."""

    code = code_pb2.ALREADY_EXISTS

    def __init__(self, key: str, task_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different request (task {task_id})",
            "IDEMPOTENCY_KEY_REUSED",
            task_id,
        )


class Unauthenticated(GatewayError):
    """No valid bearer token; the message never repeats what the caller sent."""

    code = code_pb2.UNAUTHENTICATED


class PermissionDenied(GatewayError):
    """The caller's token does not allow this task or this action."""

    code = code_pb2.PERMISSION_DENIED


class Unavailable(GatewayError):
    """The broker or the result backend cannot be reached; retrying later may work."""

    code = code_pb2.UNAVAILABLE


class Internal(GatewayError):
    """A fault of the gateway or its Redis (a key of the wrong type), logged where found;
    the caller is told only where to look."""

    code = code_pb2.INTERNAL

    def __init__(self) -> None:
        super().__init__("internal error; see the gateway log")


class ResultIgnored(TaskReasonError):
    """The task is declared `ignore_result=True`: there is no result to read or wait for."""

    code = code_pb2.FAILED_PRECONDITION

    def __init__(self, task_id: str, task: str) -> None:
        super().__init__(
            f"task {task_id} ({task}) is declared ignore_result=True: it stores no state or result",
            "RESULT_IGNORED",
            task_id,
        )


# Errors of a Redis that refuses writes for now, worth a retry: a primary with fewer
# replicas in sync than `min-replicas-to-write`, a primary demoted by a failover.
_REFUSED_WRITES = ("NOREPLICAS", "READONLY", "MASTERDOWN")


def unavailable_for(what: str, exc: BaseException) -> "Unavailable | None":
    """Unavailable naming `what` for a lost or timed-out Redis connection, or a write
    Redis refuses for now; None for any other error."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return Unavailable(f"{what} is unavailable: {exc}")
    # redis-py takes READONLY off the message of the ReadOnlyError it makes of it.
    if isinstance(exc, ReadOnlyError) or (
        isinstance(exc, ResponseError) and any(r in str(exc) for r in _REFUSED_WRITES)
    ):
        return Unavailable(f"{what} refuses writes now: {exc}")
    return None


@contextmanager
def redis_unavailable(what: str) -> Iterator[None]:
    """Raise `unavailable_for` the Redis errors it names; any other error as it is."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
        unavailable = unavailable_for(what, exc)
        if unavailable is None:
            raise
        raise unavailable from exc


class TaskDidNotSucceed(TaskReasonError):
    """With `propagate`, the task failed or was revoked: its error goes in the details."""

    code = code_pb2.FAILED_PRECONDITION

    def __init__(self, reason: str, task_id: str, error: Message, summary: str) -> None:
        super().__init__(summary, reason, task_id)
        self.error = error

    def details(self) -> list[Message]:
        return [*super().details(), self.error]
