"""`AsyncClient`: `Client`'s methods, awaitable, on a `grpc.aio` channel."""

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import grpc

from taskgate import _requests as requests
from taskgate import _responses as responses
from taskgate._channel import open_aio_channel
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


class AsyncClient(ClientBase):
    """A taskgate client for asyncio; each method behaves as `taskgate.Client`'s.

    Use it as an async context manager, or `await close()`. Make it inside the event
    loop that uses it: a `grpc.aio` channel belongs to one loop.
    """

    def __init__(self, address: str | None = None, **settings: Unpack[ClientSettings]) -> None:
        super().__init__(address, **settings)
        self._channel = open_aio_channel(self._connection)
        self._stub = pb_grpc.TaskServiceStub(self._channel)  # typed as TaskServiceAsyncStub

    async def submit(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[CallOptions],
    ) -> Submitted:
        """See `Client.submit`."""
        request = requests.submit_request(submission(task, args, kwargs, options))
        attempts = self._attempts(timeout, safe=bool(request.idempotency_key))
        return responses.submitted(await self._unary(self._stub.Submit, request, attempts))

    async def result(
        self,
        task_id: str,
        *,
        wait: float = 0.0,
        propagate: bool = False,
        timeout: float | None = None,
    ) -> TaskResult:
        """See `Client.result`."""
        request = requests.result_request(task_id, wait, propagate)
        attempts = self._attempts(timeout, wait=wait)
        reply = await self._unary(self._stub.GetResult, request, attempts)
        return responses.result(reply)

    async def execute(
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
        """See `Client.execute`."""
        job = submission(task, args, kwargs, options)
        request = requests.execute_request(job, wait, propagate)
        attempts = self._attempts(timeout, wait=wait, safe=bool(job.idempotency_key))
        reply = await self._unary(self._stub.Execute, request, attempts)
        return responses.result(reply)

    async def status(self, task_id: str, *, timeout: float | None = None) -> TaskStatus:
        """See `Client.status`."""
        request = pb.GetStatusRequest(task_id=task_id)
        reply = await self._unary(self._stub.GetStatus, request, self._attempts(timeout))
        return responses.status(reply)

    async def watch(
        self, task_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[TaskStatus]:
        """See `Client.watch`."""
        attempts, last = self._watch_attempts(timeout), None
        request = pb.WatchStatusRequest(task_id=task_id)
        while True:
            call = self._stub.WatchStatus(
                request, timeout=attempts.deadline.remaining(), metadata=self._connection.metadata
            )
            try:
                async for reply in call:
                    attempts.reset()
                    state = responses.status(reply.status)
                    if state != last:
                        last = state
                        yield state
                return
            except grpc.RpcError as exc:
                await self._pause_or_raise(exc, attempts, "WatchStatus")
            finally:
                call.cancel()

    async def cancel(
        self, task_id: str, *, terminate: bool = False, timeout: float | None = None
    ) -> Cancelled:
        """See `Client.cancel`."""
        request = pb.CancelRequest(task_id=task_id, terminate=terminate)
        reply = await self._unary(self._stub.Cancel, request, self._attempts(timeout))
        return responses.cancelled(reply)

    async def tasks(self, *, timeout: float | None = None) -> TaskCatalog:
        """See `Client.tasks`."""
        request = pb.ListTasksRequest()
        reply = await self._unary(self._stub.ListTasks, request, self._attempts(timeout))
        return responses.catalog(reply)

    async def submit_batch(
        self, submissions: Sequence[Submission], *, timeout: float | None = None
    ) -> list[BatchItem]:
        """See `Client.submit_batch`."""
        safe = all(job.idempotency_key for job in submissions)
        request = requests.batch_request(submissions)
        attempts = self._attempts(timeout, safe=safe)
        return responses.batch(await self._unary(self._stub.SubmitBatch, request, attempts))

    async def close(self) -> None:
        """Close the channel; calls in flight end CANCELLED."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _unary(
        self,
        method: "grpc.aio.UnaryUnaryMultiCallable[Request, Reply]",
        request: Request,
        attempts: Attempts,
    ) -> Reply:
        while True:
            try:
                timeout = attempts.deadline.remaining()
                return await method(request, timeout=timeout, metadata=self._connection.metadata)
            except grpc.RpcError as exc:
                await self._pause_or_raise(exc, attempts, type(request).__name__)

    @staticmethod
    async def _pause_or_raise(exc: grpc.RpcError, attempts: Attempts, what: str) -> None:
        error = from_rpc_error(exc)
        pause = attempts.pause_after(error)
        if pause is None:
            raise error from exc
        logger.info("%s: %s; trying again in %.2f s", what, error.message, pause)
        await asyncio.sleep(pause)
