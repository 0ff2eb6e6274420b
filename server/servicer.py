"""`taskgate.v1.TaskService`: each RPC translates a request, calls the gateway, replies."""

from typing import Any, TypeAlias

import grpc

from server.gateway import Gateway
from server.requests import parse_submit, parse_task_id
from server.responses import result_response, status_response, wait_budget
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class TaskService(pb_grpc.TaskServiceServicer):
    """The gRPC face of the gateway; errors are mapped by `server.interceptors`."""

    def __init__(self, gateway: Gateway, max_wait_seconds: float) -> None:
        self._gateway = gateway
        self._max_wait = max_wait_seconds

    async def Submit(self, request: pb.SubmitRequest, context: Context) -> pb.SubmitResponse:
        task_id = await self._gateway.submit(parse_submit(request))
        return pb.SubmitResponse(task_id=task_id)

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        task_id = parse_task_id(request.task_id)
        return status_response(task_id, await self._gateway.status(task_id))

    async def GetResult(
        self, request: pb.GetResultRequest, context: Context
    ) -> pb.GetResultResponse:
        task_id = parse_task_id(request.task_id)
        wait = wait_budget(request, context, self._max_wait)
        snapshot = await self._gateway.result(task_id, wait)
        return result_response(task_id, snapshot, propagate=request.propagate)
