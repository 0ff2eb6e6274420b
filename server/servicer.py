"""`taskgate.v1.TaskService`: each RPC translates a request, calls the gateway, replies."""

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any, TypeAlias

import grpc

from taskgate.server import responses
from taskgate.server.auth import current_principal
from taskgate.server.batch import submit_batch
from taskgate.server.catalog import Catalog
from taskgate.server.deadlines import WaitEnds, requested_wait
from taskgate.server.errors import InvalidArgument
from taskgate.server.gateway import Gateway
from taskgate.server.registry import WorkerRegistry
from taskgate.server.requests import parse_submit, parse_task_id
from taskgate.server.submitter import Submitter
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

# ListTasks waits this long for the workers' very first answer after start-up.
_FIRST_VIEW_TIMEOUT = 3.0


class TaskService(pb_grpc.TaskServiceServicer):
    """The gRPC face of the gateway; errors are mapped by `taskgate.server.interceptors`."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        submitter: Submitter,
        catalog: Catalog,
        registry: WorkerRegistry,
        max_wait_seconds: float,
        tracebacks: bool = True,
    ) -> None:
        self._gateway = gateway
        self._submitter = submitter
        self._catalog = catalog
        self._registry = registry
        self._max_wait = max_wait_seconds
        self._wait_ends = WaitEnds()
        self._tracebacks = tracebacks  # TASKGATE_TRACEBACKS

    async def Submit(self, request: pb.SubmitRequest, context: Context) -> pb.SubmitResponse:
        submission = parse_submit(request)
        submitted = await self._submitter.submit(submission, context.time_remaining())
        return pb.SubmitResponse(task_id=submitted.task_id, deduplicated=submitted.deduplicated)

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        task_id = parse_task_id(request.task_id)
        return responses.status_response(await self._gateway.status(task_id))

    async def GetResult(
        self, request: pb.GetResultRequest, context: Context
    ) -> pb.GetResultResponse:
        task_id = parse_task_id(request.task_id)
        with self._reserve_wait(request, context) as until:
            view = await self._gateway.result(task_id, until)
        return responses.result_response(view, request.propagate, self._tracebacks)

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        try:
            submission = parse_submit(request.submit)
        except InvalidArgument as exc:
            raise exc.within("submit") from None
        with self._reserve_wait(request, context) as until:
            submitted = await self._submitter.submit(submission, context.time_remaining())
            if submitted.deduplicated:  # an earlier task: it may be long done, even expired
                view = await self._gateway.result(submitted.task_id, until)
            else:
                view = await self._gateway.result_of_new(submitted.task_id, submission.task, until)
        return responses.execute_response(view, request.propagate, self._tracebacks)

    def _reserve_wait(
        self, request: pb.GetResultRequest | pb.ExecuteRequest, context: Context
    ) -> ContextManager[float]:
        """When the request's wait ends (event-loop time), held while it waits."""
        wait = requested_wait(request.wait if request.HasField("wait") else None)
        return self._wait_ends.reserve(wait, context.time_remaining(), self._max_wait)

    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: Context
    ) -> pb.SubmitBatchResponse:
        return await submit_batch(request.requests, self._submitter, context.time_remaining())

    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.CancelResponse:
        task_id = parse_task_id(request.task_id)
        current_principal.get().require_cancel()
        outcome, view = await self._gateway.cancel(task_id, terminate=request.terminate)
        return pb.CancelResponse(task_id=task_id, outcome=outcome, state=view.snapshot.state)

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        task_id = parse_task_id(request.task_id)
        async for view in self._gateway.watch(task_id):
            yield pb.WatchStatusResponse(status=responses.status_response(view))

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        view = await self._registry.view(first_wait=_FIRST_VIEW_TIMEOUT)
        return responses.task_list_response(self._catalog, view, current_principal.get())
