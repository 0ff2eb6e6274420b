"""W3C trace context from a call's metadata into its Celery messages; OTel spans with the extra.

With no tracing library, a valid `traceparent` (and its `tracestate`) is copied as is into
the top-level headers of every message the call publishes, where a worker's
`opentelemetry-instrumentation-celery` (or the task, `self.request.traceparent`) reads it.
With `TASKGATE_TRACING=otel` the gateway makes a server span per call and a producer span
per publish, and the message carries the producer span's context instead.
"""

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import grpc

from taskgate.server.requests import Submission
from taskgate.worker.tracing import tracer_provider

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

# version-traceid-parentid-flags, lowercase hex; later versions may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_INVALID_VERSION = "ff"
MAX_TRACESTATE_CHARS = 512  # what W3C asks every vendor to pass on, at least
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_SERVICE = "taskgate.v1.TaskService"
_STREAMING_METHOD = "WatchStatus"


@dataclass(frozen=True)
class TraceContext:
    """A caller's valid W3C trace context."""

    traceparent: str
    tracestate: str = ""

    @property
    def trace_id(self) -> str:
        """The 32 hex digits every span of the trace shares."""
        return self.traceparent[3:35]

    def headers(self) -> dict[str, str]:
        """The message headers that carry it."""
        if not self.tracestate:
            return {"traceparent": self.traceparent}
        return {"traceparent": self.traceparent, "tracestate": self.tracestate}


def parse_traceparent(value: str) -> str | None:
    """`value` when it is a W3C traceparent; None for anything else (dropped, never fatal)."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == _INVALID_VERSION or (version == "00" and rest):
        return None
    if set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return match.group(0)


def trace_context(metadata: Iterable[tuple[str, Any]]) -> TraceContext | None:
    """The call's trace context from its gRPC metadata, if it sent a valid one."""
    parents: list[str] = []
    states: list[str] = []
    for key, value in metadata:
        if key == "traceparent" and isinstance(value, str):
            parents.append(value)
        elif key == "tracestate" and isinstance(value, str):
            states.append(value.strip())
    parent = parse_traceparent(parents[0]) if len(parents) == 1 else None
    if parent is None:
        return None
    state = ",".join(part for part in states if part)  # W3C: repeated headers join
    if len(state) > MAX_TRACESTATE_CHARS or not _PRINTABLE.fullmatch(state):
        state = ""
    return TraceContext(parent, state)


_incoming: ContextVar[TraceContext | None] = ContextVar("incoming_trace", default=None)


def remember_incoming(metadata: Iterable[tuple[str, Any]]) -> TraceContext | None:
    """Keep the call's trace context for the publishes it makes; returns it."""
    context = trace_context(metadata)
    _incoming.set(context)
    return context


class Tracing:
    """The gateway's choice, made once at start: pass trace context on, or trace with OTel."""

    def __init__(self) -> None:
        self._tracer: Tracer | None = None

    def enable_otel(self, exporters: tuple[str, ...]) -> None:
        """Install an SDK tracer provider exporting to `exporters` (the `otel` extra)."""
        from opentelemetry import trace  # noqa: PLC0415

        trace.set_tracer_provider(tracer_provider(exporters))
        self._tracer = trace.get_tracer(__name__)
        logger.info("tracing with OpenTelemetry, exporting to %s", ", ".join(exporters) or "none")

    @property
    def spans_on(self) -> bool:
        """True when the gateway makes spans of its own (a producer span a publish)."""
        return self._tracer is not None

    def incoming_headers(self) -> dict[str, str]:
        """The trace headers a message passes on from the call, without spans of ours."""
        incoming = _incoming.get()
        return incoming.headers() if incoming is not None else {}

    def outer_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """OTel's server span, outside authentication and limits, so that a refused call's
        span has its status; the streaming WatchStatus is left to `inner_interceptors`
        (OTel's wrapper takes response streams as async generators, which the gateway's
        own interceptor does not return)."""
        return self._server_spans(streaming=False)

    def inner_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """OTel's server span for WatchStatus, around the servicer's own stream."""
        return self._server_spans(streaming=True)

    def _server_spans(self, streaming: bool) -> list[grpc.aio.ServerInterceptor]:
        if self._tracer is None:
            return []
        from opentelemetry.instrumentation.grpc import (  # noqa: PLC0415
            aio_server_interceptor,
            filters,
        )

        stream = filters.method_name(_STREAMING_METHOD)
        chosen = filters.all_of(
            filters.service_name(_SERVICE), stream if streaming else filters.negate(stream)
        )
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(filter_=chosen)  # type: ignore[no-untyped-call]
        return [interceptor]

    @contextmanager
    def publishing(self, task: str, task_id: str) -> Iterator[dict[str, str]]:
        """The trace headers of one message, inside its producer span when tracing is on."""
        if self._tracer is None:
            yield self.incoming_headers()
            return
        from opentelemetry.propagate import inject  # noqa: PLC0415
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        # Named and attributed as opentelemetry-instrumentation-celery names a Python
        # caller's apply_async, so both kinds of caller look alike in a trace.
        attributes = {"celery.action": "apply_async", "celery.task_name": task}
        name = f"apply_async/{task}"
        with self._tracer.start_as_current_span(name, kind=SpanKind.PRODUCER) as span:
            span.set_attributes({**attributes, "messaging.message.id": task_id})
            carrier: dict[str, str] = {}
            inject(carrier)
            yield carrier


TRACING = Tracing()


def with_trace_headers(submission: Submission, trace_headers: dict[str, str]) -> Submission:
    """`submission` with the trace headers among its message headers (theirs win)."""
    if not trace_headers:
        return submission
    headers = {**submission.options.get("headers", {}), **trace_headers}
    return replace(submission, options={**submission.options, "headers": headers})
