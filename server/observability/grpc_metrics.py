"""The gRPC server series of go-grpc-prometheus, counted by the outermost interceptor.

Names, labels, `grpc_type` values and `grpc_code` spellings (Go's `codes.Code.String()`:
`OK`, `Canceled`, `NotFound`, ...) are go-grpc-prometheus's, so that the common gRPC
dashboards work unchanged. A call refused inside the chain (authentication, limits,
an unreadable request) is counted with the code it got.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc

from taskgate.server.observability import metrics
from taskgate.server.observability.grpc_names import GO_CODE_NAMES, STATUS_CODES, split_method

MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def initialize(types: dict[str, str]) -> None:
    """Create every method's series at zero, as go-grpc-prometheus's InitializeMetrics does,
    so that `rate()` sees a method's first call."""
    for method, grpc_type in types.items():
        labels = (grpc_type, *split_method(method))
        for family in (metrics.GRPC_STARTED, metrics.GRPC_RECEIVED, metrics.GRPC_SENT):
            family.labels(*labels)
        metrics.GRPC_HANDLING.labels(*labels)
        for name in GO_CODE_NAMES.values():
            metrics.GRPC_HANDLED.labels(*labels, name)


def _handler_type(handler: MethodHandler) -> str:
    if handler.unary_unary is not None:
        return "unary"
    if handler.unary_stream is not None:
        return "server_stream"
    return "client_stream" if handler.stream_unary is not None else "bidi_stream"


class MethodSeries:
    """One method's series, looked up by their labels once, not at every call."""

    def __init__(self, grpc_type: str, method: str) -> None:
        self._labels = (grpc_type, *split_method(method))
        self.started = metrics.GRPC_STARTED.labels(*self._labels)
        self.received = metrics.GRPC_RECEIVED.labels(*self._labels)
        self.sent = metrics.GRPC_SENT.labels(*self._labels)
        self.handling = metrics.GRPC_HANDLING.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        """The counter of calls that ended with `code`."""
        found = self._handled.get(code)
        if found is None:
            found = metrics.GRPC_HANDLED.labels(*self._labels, GO_CODE_NAMES[code])
            self._handled[code] = found
        return found


class _Call:
    """One call's series: counts messages both ways and its end, with its code."""

    def __init__(self, series: MethodSeries) -> None:
        self._series = series
        self._started = time.perf_counter()
        series.started.inc()

    def received(self) -> None:
        self._series.received.inc()

    def sent(self) -> None:
        self._series.sent.inc()

    def handled(self, code: grpc.StatusCode) -> None:
        self._series.handled(code).inc()
        self._series.handling.observe(time.perf_counter() - self._started)


def _code_set(context: Context) -> grpc.StatusCode | None:
    code: Any = context.code()
    if isinstance(code, int):
        return STATUS_CODES.get(code)
    return code if isinstance(code, grpc.StatusCode) else None


def ended(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The code the caller gets: the one set or aborted with, else from how it ended."""
    code = _code_set(context)
    if code is not None:
        return code
    if error is None or isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.OK
    if isinstance(error, BaseException) and not isinstance(error, Exception):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class _CountingContext:
    """The call's context, counting what the handlers read and write through it
    (TaskService's handlers read their request with `context.read()`)."""

    def __init__(self, context: Context, call: _Call) -> None:
        self._context = context
        self._call = call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        message = await self._context.read()
        if message is not grpc.aio.EOF:
            self._call.received()
        return message

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._call.sent()


async def _counted(requests: AsyncIterator[Any], call: _Call) -> AsyncIterator[Any]:
    async for request in requests:
        call.received()
        yield request


Behaviour: TypeAlias = Callable[..., Any]


def _measured(behaviour: Behaviour, series: MethodSeries, request_streams: bool) -> Behaviour:
    """`behaviour` (a coroutine or async generator function) with its call counted."""

    def begin(request: Any, context: Context) -> tuple[_Call, Any, Any]:
        call = _Call(series)
        if request_streams:
            request = _counted(request, call)
        else:
            call.received()
        return call, request, _CountingContext(context, call)

    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            call, request, counting = begin(request, context)
            error: BaseException | None = None
            try:
                async for response in behaviour(request, counting):
                    yield response
                    call.sent()
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.handled(ended(context, error))

        return stream

    async def unary(request: Any, context: Context) -> Any:
        call, request, counting = begin(request, context)
        error: BaseException | None = None
        try:
            response = await behaviour(request, counting)
            if response is not None:
                call.sent()
            return response
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.handled(ended(context, error))

    return unary


class GrpcMetrics:
    """Counts every call the server handles. The gateway's one interceptor
    (server/interceptors.py) measures with it, outside everything it does, so that
    refusals count too."""

    def __init__(self, types: dict[str, str]) -> None:
        self._types = types  # the proto's own types: TaskService is served client-streaming

    def series(self, method: str, handler: MethodHandler) -> MethodSeries:
        """The series of `method`, typed as the proto declares it."""
        return MethodSeries(self._types.get(method) or _handler_type(handler), method)

    def measured(self, method: str, handler: MethodHandler) -> MethodHandler:
        """`handler` with each of its calls counted."""
        series = self.series(method, handler)
        serialization = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            wrapped = _measured(handler.unary_unary, series, False)
            return grpc.unary_unary_rpc_method_handler(wrapped, **serialization)
        if handler.unary_stream is not None:
            wrapped = _measured(handler.unary_stream, series, False)
            return grpc.unary_stream_rpc_method_handler(wrapped, **serialization)
        if handler.stream_unary is not None:
            wrapped = _measured(handler.stream_unary, series, True)
            return grpc.stream_unary_rpc_method_handler(wrapped, **serialization)
        if handler.stream_stream is not None:
            wrapped = _measured(handler.stream_stream, series, True)
            return grpc.stream_stream_rpc_method_handler(wrapped, **serialization)
        return handler
