"""The one interceptor every TaskService call passes: who is calling, limits, error mapping.

Errors are mapped to gRPC statuses here and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from server.auth import TokenAuthenticator, current_principal
from server.errors import GatewayError, InvalidArgument
from server.limits import ConcurrencyLimit, RateLimit

logger = logging.getLogger(__name__)

_SERVICE_PREFIX = "/taskgate."

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
UnaryHandler: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
StreamHandler: TypeAlias = Callable[[Any, Context], AsyncIterator[Any]]
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not the message the method takes."""

    error: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # grpc answers UNKNOWN (and logs a traceback) when a deserializer raises; handing
    # the handler a marker instead lets the caller get INVALID_ARGUMENT.
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return deserialize


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, applies the limits, and turns exceptions into statuses.

    Health checks and reflection are not TaskService calls and pass untouched.
    """

    def __init__(
        self,
        authenticator: TokenAuthenticator | None = None,
        concurrency: ConcurrencyLimit | None = None,
        rate: RateLimit | None = None,
    ) -> None:
        self._authenticator = authenticator or TokenAuthenticator(())
        self._concurrency = concurrency
        self._rate = rate

    @contextlib.asynccontextmanager
    async def _guarded(self, method: str, request: Any, context: Context) -> AsyncIterator[None]:
        entered = False
        try:
            principal = self._authenticator.authenticate(context.invocation_metadata() or ())
            current_principal.set(principal)
            if self._rate is not None:
                self._rate.take(principal.name)
            if self._concurrency is not None:
                self._concurrency.enter()
                entered = True
            if isinstance(request, Undecodable):
                raise InvalidArgument("request", f"is not a valid message: {request.error}")
            yield
        except GatewayError as exc:
            status = rpc_status.to_status(exc.to_status())
            await context.abort(status.code, status.details, status.trailing_metadata)
        except Exception:
            # A bug, not the caller's fault: log it whole, answer INTERNAL, never UNKNOWN.
            logger.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway log")
        finally:
            if entered and self._concurrency is not None:
                self._concurrency.leave()

    def _unary(self, method: str, inner: UnaryHandler) -> UnaryHandler:
        async def handle(request: Any, context: Context) -> Any:
            async with self._guarded(method, request, context):
                return await inner(request, context)

        return handle

    def _stream(self, method: str, inner: StreamHandler) -> StreamHandler:
        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._guarded(method, request, context):
                async for response in inner(request, context):
                    yield response

        return handle

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_SERVICE_PREFIX):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, cast(UnaryHandler, handler.unary_unary)),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, cast(StreamHandler, handler.unary_stream)),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler
