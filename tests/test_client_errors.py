"""Pure logic of the client: statuses to exceptions, and the retry schedule."""

import pickle

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

import taskgate
from taskgate._retry import Attempts, Deadline
from taskgate.errors import from_status
from taskgate.v1 import task_service_pb2 as pb


def status(code: int, *details: Message) -> status_pb2.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code, message="what the gateway said", details=packed)


def reason(name: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=name, metadata={"task_id": "t-1"})


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (code_pb2.NOT_FOUND, taskgate.TaskNotFound),
        (code_pb2.UNAVAILABLE, taskgate.Unavailable),
        (code_pb2.UNAUTHENTICATED, taskgate.Unauthenticated),
        (code_pb2.PERMISSION_DENIED, taskgate.PermissionDenied),
        (code_pb2.DEADLINE_EXCEEDED, taskgate.DeadlineExceeded),
        (code_pb2.INTERNAL, taskgate.InternalError),
        (code_pb2.FAILED_PRECONDITION, taskgate.FailedPrecondition),
        (code_pb2.UNKNOWN, taskgate.TaskgateError),
        (code_pb2.CANCELLED, taskgate.TaskgateError),
    ],
)
def test_each_code_has_its_exception(code: int, kind: type[taskgate.TaskgateError]) -> None:
    error = from_status(status(code))
    assert type(error) is kind
    assert (error.code.value[0], error.message) == (code, "what the gateway said")


def test_a_failed_task_carries_its_exception() -> None:
    task_error = pb.TaskError(type="KeyError", message="'x'", module="builtins", traceback="Tb")
    error = from_status(status(code_pb2.FAILED_PRECONDITION, reason("TASK_FAILED"), task_error))
    assert type(error) is taskgate.TaskFailed
    assert error.task_id == "t-1"
    assert error.error == taskgate.ExceptionInfo("KeyError", "'x'", "builtins", "Tb")


def test_an_exception_pickles_whole() -> None:
    info = taskgate.ExceptionInfo("KeyError", "'x'", "builtins", "Tb")
    failed = taskgate.TaskFailed(grpc.StatusCode.FAILED_PRECONDITION, "task t-1 ended", "t-1", info)
    copy = pickle.loads(pickle.dumps(failed))
    assert (type(copy), copy.task_id, copy.error) == (taskgate.TaskFailed, "t-1", info)
    assert str(copy) == str(failed) == "FAILED_PRECONDITION: task t-1 ended"


def test_a_revoked_task_is_task_revoked_and_result_ignored_its_own() -> None:
    revoked = from_status(
        status(code_pb2.FAILED_PRECONDITION, reason("TASK_REVOKED"), pb.TaskError())
    )
    assert type(revoked) is taskgate.TaskRevoked
    ignored = from_status(status(code_pb2.FAILED_PRECONDITION, reason("RESULT_IGNORED")))
    assert type(ignored) is taskgate.ResultIgnored


def test_details_are_read_into_the_exception() -> None:
    violation = error_details_pb2.BadRequest.FieldViolation(field="task", description="empty")
    invalid = from_status(
        status(
            code_pb2.INVALID_ARGUMENT, error_details_pb2.BadRequest(field_violations=[violation])
        )
    )
    assert isinstance(invalid, taskgate.InvalidArgument)
    assert invalid.violations == {"task": "empty"}
    reused = from_status(status(code_pb2.ALREADY_EXISTS, reason("IDEMPOTENCY_KEY_REUSED")))
    assert isinstance(reused, taskgate.IdempotencyKeyReused)
    assert reused.task_id == "t-1"
    delay = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=1, nanos=500_000_000))
    limited = from_status(status(code_pb2.RESOURCE_EXHAUSTED, delay))
    assert isinstance(limited, taskgate.ResourceExhausted)
    assert limited.retry_after == 1.5


def test_pauses_grow_to_their_cap_and_stop_after_the_attempts() -> None:
    policy = taskgate.RetryPolicy(attempts=8, initial_backoff=0.1, max_backoff=0.5)
    pauses = list(policy.pauses())
    caps = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5]
    assert len(pauses) == len(caps)
    assert all(0 <= pause <= cap for pause, cap in zip(pauses, caps, strict=True))


def test_only_unavailable_is_retried_and_never_past_the_deadline() -> None:
    unavailable = taskgate.Unavailable(grpc.StatusCode.UNAVAILABLE, "down")
    attempts = Attempts(taskgate.RetryPolicy(attempts=3), Deadline(None))
    assert attempts.pause_after(taskgate.TaskNotFound(grpc.StatusCode.NOT_FOUND, "no")) is None
    assert attempts.pause_after(unavailable) is not None
    assert attempts.pause_after(unavailable) is not None
    assert attempts.pause_after(unavailable) is None
    no_time = Attempts(taskgate.RetryPolicy(attempts=3, initial_backoff=10), Deadline(0))
    assert no_time.pause_after(unavailable) is None


def test_a_reset_schedule_allows_its_retries_again() -> None:
    unavailable = taskgate.Unavailable(grpc.StatusCode.UNAVAILABLE, "down")
    attempts = Attempts(taskgate.RetryPolicy(attempts=2), Deadline(None))
    assert attempts.pause_after(unavailable) is not None
    assert attempts.pause_after(unavailable) is None
    attempts.reset()
    assert attempts.pause_after(unavailable) is not None
