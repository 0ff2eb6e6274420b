"""`Client`: the gateway's RPCs as typed Python methods, on a synchronous gRPC channel."""

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import grpc

from taskgate import _requests as requests
from taskgate import _responses as responses
from taskgate._channel import open_channel
from taskgate._core import CallOptions, ClientBase, ClientSettings, submission
from taskgate._models import (
    BatchItem,
    Cancelled,
    Submission,
    Submitted,
    TaskCatalog,
    TaskResult,
    TaskStatus,
)
from taskgate._retry import Attempts
from taskgate.errors import from_rpc_error
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class Client(ClientBase):
    """A taskgate client; every failed call raises a `taskgate.errors.TaskgateError`.

    Use it as a context manager, or call `close()`. See `ClientBase` for the arguments.
    """

    def __init__(self, address: str | None = None, **settings: Unpack[ClientSettings]) -> None:
        super().__init__(address, **settings)
        self._channel = open_channel(self._connection)
        self._stub = pb_grpc.TaskServiceStub(self._channel)

    def submit(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[CallOptions],
    ) -> Submitted:
        """Queue `task` with these arguments; retried on UNAVAILABLE only with an
        `idempotency_key` (a retry without one could queue the task twice)."""
        request = requests.submit_request(submission(task, args, kwargs, options))
        attempts = self._attempts(timeout, safe=bool(request.idempotency_key))
        return responses.submitted(self._unary(self._stub.Submit, request, attempts))

    def result(
        self,
        task_id: str,
        *,
        wait: float = 0.0,
        propagate: bool = False,
        timeout: float | None = None,
    ) -> TaskResult:
        """The task's outcome, waiting up to `wait` seconds for it (`ready` False if it
        has none by then). With `propagate`, a failed task raises `TaskFailed`."""
        request = requests.result_request(task_id, wait, propagate)
        attempts = self._attempts(timeout, wait=wait)
        return responses.result(self._unary(self._stub.GetResult, request, attempts))

    def execute(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        wait: float = 30.0,
        propagate: bool = False,
        timeout: float | None = None,
        **options: Unpack[CallOptions],
    ) -> TaskResult:
        """Submit `task` and wait up to `wait` seconds for its outcome, in one call."""
        job = submission(task, args, kwargs, options)
        request = requests.execute_request(job, wait, propagate)
        attempts = self._attempts(timeout, wait=wait, safe=bool(job.idempotency_key))
        return responses.result(self._unary(self._stub.Execute, request, attempts))

    def status(self, task_id: str, *, timeout: float | None = None) -> TaskStatus:
        """The task's state now."""
        request = pb.GetStatusRequest(task_id=task_id)
        return responses.status(self._unary(self._stub.GetStatus, request, self._attempts(timeout)))

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[TaskStatus]:
        """The task's current state, then each change, until a final state; no deadline
        unless `timeout` is given. A stream cut by UNAVAILABLE is opened again (the retry
        policy counts failures in a row) and a state seen just before is not repeated."""
        attempts, last = self._watch_attempts(timeout), None
        request = pb.WatchStatusRequest(task_id=task_id)
        while True:
            call = self._stub.WatchStatus(
                request, timeout=attempts.deadline.remaining(), metadata=self._connection.metadata
            )
            try:
                for reply in call:
                    attempts.reset()
                    state = responses.status(reply.status)
                    if state != last:
                        last = state
                        yield state
                return
            except grpc.RpcError as exc:
                self._pause_or_raise(exc, attempts, "WatchStatus")
            finally:
                call.cancel()

    def cancel(
        self, task_id: str, *, terminate: bool = False, timeout: float | None = None
    ) -> Cancelled:
        """Revoke the task; with `terminate`, also stop it if it runs."""
        request = pb.CancelRequest(task_id=task_id, terminate=terminate)
        return responses.cancelled(self._unary(self._stub.Cancel, request, self._attempts(timeout)))

    def tasks(self, *, timeout: float | None = None) -> TaskCatalog:
        """The tasks this caller may submit, and the workers serving each."""
        reply = self._unary(self._stub.ListTasks, pb.ListTasksRequest(), self._attempts(timeout))
        return responses.catalog(reply)

    def submit_batch(
        self, submissions: Sequence[Submission], *, timeout: float | None = None
    ) -> list[BatchItem]:
        """Queue many tasks in one call: one item per submission, in order, each with
        its task id or its own error. Retried only when every submission has a key."""
        safe = all(job.idempotency_key for job in submissions)
        request = requests.batch_request(submissions)
        reply = self._unary(self._stub.SubmitBatch, request, self._attempts(timeout, safe=safe))
        return responses.batch(reply)

    def close(self) -> None:
        """Close the channel; calls in flight end CANCELLED."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _unary(
        self,
        method: "grpc.UnaryUnaryMultiCallable[Request, Reply]",
        request: Request,
        attempts: Attempts,
    ) -> Reply:
        while True:
            try:
                return method(
                    request,
                    timeout=attempts.deadline.remaining(),
                    metadata=self._connection.metadata,
                )
            except grpc.RpcError as exc:
                self._pause_or_raise(exc, attempts, type(request).__name__)

    @staticmethod
    def _pause_or_raise(exc: grpc.RpcError, attempts: Attempts, what: str) -> None:
        error = from_rpc_error(exc)
        pause = attempts.pause_after(error)
        if pause is None:
            raise error from exc
        logger.info("%s: %s; trying again in %.2f s", what, error.message, pause)
        time.sleep(pause)
