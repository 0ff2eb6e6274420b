"""One access-log line per TaskService call, refused calls too, streams when they end.

The gateway's interceptor (server/interceptors.py) notes what the request and the reply
name, and writes the line with the status the call ended with, refusals included.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc

from taskgate.server.auth import ANONYMOUS, current_principal
from taskgate.server.observability.logs import ACCESS_LOGGER
from taskgate.v1 import task_service_pb2 as pb

access_logger = logging.getLogger(ACCESS_LOGGER)

LISTED_IDS = 10  # a SubmitBatch line names its task ids up to this many
_MAX_FIELD_CHARS = 255

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


@dataclass(slots=True)
class CallNote:
    """What one call's line says besides its status and duration."""

    rpc: str
    task: str = ""
    task_ids: list[str] = field(default_factory=list)
    task_count: int | None = None
    trace_id: str = ""


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
        task_id = _task_id(request.task_id)
        note.task_ids = [task_id] if task_id else []


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


def log_call(note: CallNote, default: grpc.StatusCode, started: float, context: Context) -> None:
    """Write the call's line: `default` is its code unless the call set one (an abort);
    `started` is its `time.perf_counter()` at the start."""
    code = _code_name(context, default)
    principal = current_principal.get()
    caller = "-" if principal is ANONYMOUS else principal.name  # the token's name, never it
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    peer = context.peer()
    fields: dict[str, Any] = {
        "rpc": note.rpc, "code": code, "duration_ms": duration_ms, "caller": caller, "peer": peer
    }  # fmt: skip
    if note.task:
        fields["task"] = note.task
    if note.task_ids:
        fields["task_ids"] = note.task_ids
    if note.trace_id:
        fields["trace_id"] = note.trace_id
    if note.task_count is not None:
        fields["task_count"] = note.task_count
    args = (note.rpc, code, duration_ms, note.task or "-", ",".join(note.task_ids) or "-")
    # Made and handled as `info` would, less its search of the stack for the caller's
    # file and line, which no format of the gateway's prints.
    access_logger.handle(
        access_logger.makeRecord(
            access_logger.name, logging.INFO, _HERE, 0, _LINE, (*args, caller, peer), None,
            extra=fields,
        )
    )  # fmt: skip


_HERE = __file__
_LINE = "%s %s %.2fms task=%s task_ids=%s caller=%s peer=%s"
