"""What the gateway's interceptor keeps of one TaskService call: its gRPC series, its
trace context and its access line.

A method's `Calls` is made once, when its handler is wrapped; a `Call` at each call.
"""

import logging
import time
from typing import Any, TypeAlias

import grpc

from taskgate.server.observability.access_log import CallNote, access_logger
from taskgate.server.observability.grpc_metrics import MethodSeries, ended
from taskgate.server.observability.tracing import remember_incoming

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class Calls:
    """One TaskService method's calls: `series` None when no metrics are kept."""

    def __init__(self, method: str, series: MethodSeries | None) -> None:
        self.method = method
        self.rpc = method.rpartition("/")[2]
        self._series = series

    def start(self, context: Context) -> "Call":
        """A call begins: counted, and its trace context kept for what it publishes."""
        return Call(self, self._series, context)


class Call:
    """One call: counts its messages and its end, and makes its access line's note."""

    __slots__ = ("_calls", "_series", "method", "started", "trace_id")

    def __init__(self, calls: Calls, series: MethodSeries | None, context: Context) -> None:
        self.started = time.perf_counter()
        self.method = calls.method
        self._calls = calls
        self._series = series
        if series is not None:
            series.started.inc()
        trace = remember_incoming(context.invocation_metadata() or ())
        self.trace_id = trace.trace_id if trace is not None else ""

    def note(self) -> CallNote | None:
        """The note of its access line; None with TASKGATE_ACCESS_LOG=off."""
        if not access_logger.isEnabledFor(logging.INFO):
            return None
        return CallNote(self._calls.rpc, trace_id=self.trace_id)

    def received(self) -> None:
        """It read a message."""
        if self._series is not None:
            self._series.received.inc()

    def sent(self) -> None:
        """It wrote a message, or returned its reply."""
        if self._series is not None:
            self._series.sent.inc()

    def handled(self, context: Context, error: BaseException | None) -> None:
        """It ended, with `error` when it raised one."""
        if self._series is not None:
            self._series.handled(ended(context, error)).inc()
            self._series.handling.observe(time.perf_counter() - self.started)
