"""Error mapping on a real in-process gRPC server: rich statuses, and INTERNAL for bugs."""

import asyncio
import logging

import grpc
import pytest

from taskgate.server.errors import InvalidArgument, NotFound, Unavailable
from taskgate.server.interceptors import GatewayInterceptor
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import violated_fields


async def _call(error: Exception) -> grpc.aio.AioRpcError:
    """Serve one method that raises `error`, call it, and return what the caller saw."""

    async def failing(request: pb.GetStatusRequest, context: object) -> pb.GetStatusResponse:
        raise error

    handler = grpc.unary_unary_rpc_method_handler(
        failing,
        request_deserializer=pb.GetStatusRequest.FromString,
        response_serializer=pb.GetStatusResponse.SerializeToString,
    )
    server = grpc.aio.server(interceptors=[GatewayInterceptor()])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("taskgate.v1.TaskService", {"GetStatus": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetStatus(pb.GetStatusRequest(task_id="x"), timeout=5)
            return caught.value
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no task"), grpc.StatusCode.NOT_FOUND),
        (Unavailable("broker down"), grpc.StatusCode.UNAVAILABLE),
        (InvalidArgument("task_id", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_gateway_errors_keep_their_code_and_message(
    error: Exception, code: grpc.StatusCode
) -> None:
    caught = asyncio.run(_call(error))
    assert caught.code() == code
    assert caught.details() == str(error)


def test_invalid_argument_names_the_field() -> None:
    caught = asyncio.run(_call(InvalidArgument("task_id", "bad")))
    assert violated_fields(caught) == ["task_id"]


def test_an_unexpected_exception_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="taskgate.server.interceptors"):
        caught = asyncio.run(_call(KeyError("secret internals")))
    assert caught.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in (caught.details() or "")
    assert "KeyError: 'secret internals'" in caplog.text
