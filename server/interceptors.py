"""Maps the gateway's exceptions to gRPC statuses, in this one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc_status import rpc_status

from server.errors import GatewayError

logger = logging.getLogger(__name__)

_SERVICE_PREFIX = "/taskgate."

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def _mapped(method: str, inner: Handler) -> Handler:
    async def handle(request: Any, context: Context) -> Any:
        try:
            return await inner(request, context)
        except GatewayError as exc:
            status = rpc_status.to_status(exc.to_status())
            await context.abort(status.code, status.details, status.trailing_metadata)
        except Exception:
            # A bug, not the caller's fault: log it whole, answer INTERNAL, never UNKNOWN.
            logger.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway log")

    return handle


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns GatewayError into its rich status and any other exception into INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(_SERVICE_PREFIX):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _mapped(method, cast(Handler, handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
