"""The one interceptor every call passes: its metrics, who is calling, limits, the access
line, error mapping.

Errors are mapped to gRPC statuses here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from taskgate.server.auth import TokenAuthenticator, current_principal
from taskgate.server.decoding import RequestNotReceived, Undecodable, tolerant
from taskgate.server.errors import GatewayError, InvalidArgument
from taskgate.server.limits import CallLimits, ReadSlots, ResourceExhausted, StreamNotRead
from taskgate.server.observability.access_log import CallNote, log_call, note_request, note_response
from taskgate.server.observability.calls import Call, Calls
from taskgate.server.observability.grpc_metrics import GrpcMetrics
from taskgate.server.sizes import largest_valid_requests

logger = logging.getLogger(__name__)

_SERVICE_PREFIX = "/taskgate."
_INTERNAL = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the gateway log")

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
UnaryHandler: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
StreamHandler: TypeAlias = Callable[[Any, Context], AsyncGenerator[Any, None]]
RequestsHandler: TypeAlias = Callable[[object, Context], Awaitable[Any]]
StreamingHandler: TypeAlias = Callable[[object, Context], Awaitable[None]]
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Body: TypeAlias = Callable[[Any], Awaitable[Any]]


def _peer_host(peer: str) -> str:
    """The address without its port: every connection of one host is one caller."""
    return peer.rpartition(":")[0] or peer


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    """Counts, authenticates, applies the limits, logs, and turns exceptions into statuses.

    Every TaskService method is served as a client-streaming one (the same bytes on
    the wire), so that the caller is authenticated and counted against the limits
    before the gateway reads its request: a refused call costs no parsing. The gRPC
    metrics (`metrics`, outside everything, refusals counted with their code), the
    access line and the trace context are this one wrapper's too, and each method's
    wrapped handler is built once: a call pays one layer, not five. Health checks and
    reflection are not TaskService calls: they are only counted.
    """

    def __init__(
        self,
        authenticator: TokenAuthenticator | None = None,
        limits: CallLimits | None = None,
        on_limit: Callable[[str, str], None] | None = None,
        metrics: GrpcMetrics | None = None,
    ) -> None:
        self._authenticator = authenticator or TokenAuthenticator(())
        self._limits = limits
        self._on_limit = on_limit  # told (kind, caller) of each call a limit refused
        self._metrics = metrics
        self._largest = largest_valid_requests()
        # Requests received at once: the rest stay unread in their (small) windows.
        self._reads = ReadSlots(limits.concurrent_reads if limits else 32)
        # method -> (the handler served, its wrapped handler); a handler that changes
        # (an interceptor inside that wraps per call) is wrapped again.
        self._wrapped: dict[str, tuple[MethodHandler, MethodHandler]] = {}

    def _caller(self, context: Context) -> str:
        principal = self._authenticator.authenticate(context.invocation_metadata() or ())
        current_principal.set(principal)
        return principal.name if self._authenticator.enabled else _peer_host(context.peer())

    async def _serve(self, call: Call, context: Context, body: Body) -> Any:
        """Count and log the call; admit it, read its request, run `body`; abort with
        its status."""
        error: BaseException | None = None
        default = grpc.StatusCode.UNKNOWN  # an abort (every refusal) sets its own code
        note = call.note()
        try:
            outcome: list[Any] = []
            failure = await self._attempt(call, context, body, outcome, note)
            if failure is not None:
                # Aborting here, after `_attempt` has returned, keeps the exception, its
                # traceback and the request its frames hold out of a reference cycle: they
                # are freed at once, not at the next garbage collection (a flood of
                # rejected 2 MB requests held gigabytes).
                status = rpc_status.to_status(failure)
                await context.abort(status.code, status.details, status.trailing_metadata)
            response = outcome[0]
            if response is not None:
                call.sent()
                if note is not None:
                    note_response(note, response)
            default = grpc.StatusCode.OK
            return response
        except asyncio.CancelledError as exc:
            default = grpc.StatusCode.CANCELLED  # the caller went away: nobody set a code
            error = exc
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.handled(context, error)
            if note is not None:
                log_call(note, default, call.started, context)
            error = None  # no cycle through this frame and the exception's traceback

    async def _attempt(
        self, call: Call, context: Context, body: Body, outcome: list[Any], note: CallNote | None
    ) -> status_pb2.Status | None:
        caller: str | None = None
        admitting = ""
        try:
            admitting = self._caller(context)
            if self._limits is not None:
                self._limits.enter(admitting)
            caller = admitting
            outcome.append(await body(await self._read(call, context, admitting, note)))
            return None
        except ResourceExhausted as exc:
            self._limit_hit(exc.kind, admitting)
            return exc.to_status()
        except GatewayError as exc:
            return exc.to_status()
        except Exception:
            # A bug, not the caller's fault: log it whole, answer INTERNAL, never UNKNOWN.
            logger.exception("unexpected error in %s", call.method)
            return _INTERNAL
        finally:
            if caller is not None and self._limits is not None:
                self._limits.leave(caller)

    def _limit_hit(self, kind: str, caller: str) -> None:
        if self._on_limit is not None:
            self._on_limit(kind, caller)

    async def _read(self, call: Call, context: Context, caller: str, note: CallNote | None) -> Any:
        async with self._reads.reading(caller):
            request = await context.read()
        if request is grpc.aio.EOF:
            # gRPC itself refused a request over TASKGATE_MAX_MESSAGE_BYTES and answered
            # the caller RESOURCE_EXHAUSTED; count it as such (no client sends nothing).
            self._limit_hit("size", caller)
            raise RequestNotReceived()
        call.received()
        if isinstance(request, Undecodable):
            if request.too_large:
                self._limit_hit("size", caller)
            raise InvalidArgument("request", f"is not a valid message: {request.error}")
        if note is not None:
            note_request(note, request)
        return request

    async def _write(self, call: Call, context: Context, response: Any) -> None:
        timeout = self._limits.stream_write_timeout if self._limits else None
        try:
            await asyncio.wait_for(context.write(response), timeout)
        except TimeoutError:
            assert timeout is not None
            raise StreamNotRead(timeout) from None
        except Exception:
            # A caller that went away mid-write fails the write with gRPC's own
            # batch error; that is the stream ending, not a bug of the gateway.
            if context.cancelled():
                raise asyncio.CancelledError from None
            raise
        call.sent()

    def _unary(self, calls: Calls, inner: UnaryHandler) -> RequestsHandler:
        async def handle(requests: object, context: Context) -> Any:
            return await self._serve(
                calls.start(context), context, lambda request: inner(request, context)
            )

        return handle

    def _stream(self, calls: Calls, inner: StreamHandler) -> StreamingHandler:
        # A coroutine that writes, not a generator: a write that the client does not
        # take within the timeout ends the stream, which holds only the state on its
        # way (about four copies of it: decoded, re-encoded, serialized, in gRPC).
        async def handle(requests: object, context: Context) -> None:
            call = calls.start(context)

            async def write_all(request: Any) -> None:
                async with contextlib.aclosing(inner(request, context)) as responses:
                    async for response in responses:
                        await self._write(call, context, response)

            await self._serve(call, context, write_all)

        return handle

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        served = handler.unary_unary or handler.unary_stream
        if not method.startswith(_SERVICE_PREFIX) or served is None:
            return handler if self._metrics is None else self._metrics.measured(method, handler)
        series = None if self._metrics is None else self._metrics.series(method, handler)
        calls = Calls(method, series)
        rpc = calls.rpc
        deserializer = tolerant(handler.request_deserializer, rpc, self._largest.get(rpc))
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(calls, cast(UnaryHandler, handler.unary_unary)),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(calls, cast(StreamHandler, handler.unary_stream)),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
