"""One access-log line per TaskService call, refused calls too, streams when they end.

It comes before the gateway's own interceptor: it sees the status every call ends
with, refusals included, the request (through the deserializer) and the reply. It also
keeps the call's W3C trace context for the publishes the call makes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

import grpc

from taskgate.server.auth import ANONYMOUS, current_principal
from taskgate.server.observability.logs import ACCESS_LOGGER
from taskgate.server.observability.tracing import remember_incoming
from taskgate.v1 import task_service_pb2 as pb

access_logger = logging.getLogger(ACCESS_LOGGER)

_SERVICE_PREFIX = "/taskgate."
LISTED_IDS = 10  # a SubmitBatch line names its task ids up to this many
_MAX_FIELD_CHARS = 255

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Behavior: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass
class CallNote:
    """What one call's line says besides its status and duration."""

    rpc: str
    task: str = ""
    task_ids: list[str] = field(default_factory=list)
    task_count: int | None = None
    trace_id: str = ""

    def fields(self) -> dict[str, Any]:
        """The structured fields of the line (JSON logs), empty ones left out."""
        found: dict[str, Any] = {
            "task": self.task, "task_ids": self.task_ids, "trace_id": self.trace_id
        }  # fmt: skip
        found = {name: value for name, value in found.items() if value}
        if self.task_count is not None:
            found["task_count"] = self.task_count
        return found


def _printable(text: str) -> str:
    """Caller-given text as it may appear in a line: printable and bounded, else dropped."""
    return text[:_MAX_FIELD_CHARS] if text.isprintable() else ""


def _task_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return ""  # not an id (INVALID_ARGUMENT): nothing of the caller's bytes is logged


_ASKS_ABOUT_A_TASK = (
    pb.GetStatusRequest, pb.GetResultRequest, pb.CancelRequest, pb.WatchStatusRequest
)  # fmt: skip


def note_request(note: CallNote, request: object) -> None:
    """The task name(s) a request names, or the task id it asks about."""
    if isinstance(request, pb.SubmitRequest):
        note.task = _printable(request.task)
    elif isinstance(request, pb.ExecuteRequest):
        note.task = _printable(request.submit.task)
    elif isinstance(request, pb.SubmitBatchRequest):
        names = sorted({_printable(item.task) for item in request.requests} - {""})
        note.task = ",".join(names[:LISTED_IDS])
        note.task_count = len(request.requests)
    elif isinstance(request, _ASKS_ABOUT_A_TASK):
        note.task_ids = [_task_id(request.task_id)] if _task_id(request.task_id) else []


def note_response(note: CallNote, response: object) -> None:
    """The task ids a reply carries: Submit's, Execute's, a batch's (up to LISTED_IDS)."""
    if isinstance(response, pb.SubmitResponse | pb.ExecuteResponse):
        note.task_ids = [response.task_id]
    elif isinstance(response, pb.SubmitBatchResponse):
        queued = [
            item.task_id for item in response.results if item.WhichOneof("outcome") == "task_id"
        ]
        note.task_ids = queued[:LISTED_IDS]


def _code_name(context: Context, default: grpc.StatusCode) -> str:
    code = context.code()
    return (code if isinstance(code, grpc.StatusCode) else default).name


def _log(note: CallNote, code: str, started: float, context: Context) -> None:
    principal = current_principal.get()
    caller = "-" if principal is ANONYMOUS else principal.name  # the token's name, never it
    duration_ms = round((time.monotonic() - started) * 1000, 2)
    ids = ",".join(note.task_ids) or "-"
    access_logger.info(
        "%s %s %.2fms task=%s task_ids=%s caller=%s peer=%s",
        note.rpc, code, duration_ms, note.task or "-", ids, caller, context.peer(),
        extra={
            "rpc": note.rpc, "code": code, "duration_ms": duration_ms,
            "caller": caller, "peer": context.peer(), **note.fields(),
        },
    )  # fmt: skip


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Logs every TaskService call when it ends; health and reflection are not logged."""

    def _timed(self, behavior: Behavior, note: CallNote) -> Behavior:
        async def run(requests: Any, context: Context) -> Any:
            started = time.monotonic()
            trace = remember_incoming(context.invocation_metadata() or ())
            note.trace_id = trace.trace_id if trace is not None else ""
            default = grpc.StatusCode.UNKNOWN  # an abort (every refusal) sets its own code
            try:
                result = await behavior(requests, context)
                note_response(note, result)
                default = grpc.StatusCode.OK
                return result
            except asyncio.CancelledError:
                default = grpc.StatusCode.CANCELLED  # the caller went away: nobody set a code
                raise
            finally:
                _log(note, _code_name(context, default), started, context)

        return run

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_SERVICE_PREFIX):
            return handler
        if not access_logger.isEnabledFor(logging.INFO):
            # TASKGATE_ACCESS_LOG=off: the call's trace context still reaches its tasks.
            return _wrapped(handler, _traced, handler.request_deserializer)
        note = CallNote(method.rpartition("/")[2])
        return _wrapped(
            handler, lambda behavior: self._timed(behavior, note), _noting(handler, note)
        )


def _traced(behavior: Behavior) -> Behavior:
    async def run(requests: Any, context: Context) -> Any:
        remember_incoming(context.invocation_metadata() or ())
        return await behavior(requests, context)

    return run


def _noting(handler: MethodHandler, note: CallNote) -> Callable[[bytes], Any]:
    """The handler's deserializer, noting what each request names."""
    deserialize = handler.request_deserializer

    def read(data: bytes) -> Any:
        request = deserialize(data) if deserialize is not None else data
        note_request(note, request)
        return request

    return read


def _wrapped(
    handler: MethodHandler,
    wrap: Callable[[Behavior], Behavior],
    deserializer: Callable[[bytes], Any] | None,
) -> MethodHandler:
    """`handler` with its behavior wrapped and its requests read by `deserializer`; the
    gateway's interceptor serves every TaskService method as a client-streaming coroutine."""
    serialize = handler.response_serializer
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            wrap(cast(Behavior, handler.stream_unary)),
            request_deserializer=deserializer,
            response_serializer=serialize,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            wrap(cast(Behavior, handler.stream_stream)),
            request_deserializer=deserializer,
            response_serializer=serialize,
        )
    return handler
