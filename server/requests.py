"""Turns protobuf requests into validated values; every problem names its field."""

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from taskgate.server import codec, times
from taskgate.server.errors import InvalidArgument
from taskgate.v1 import task_service_pb2 as pb

_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")
_HEADER_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
# No ':' and no leading '_': kombu keeps its own keys (_kombu.binding.*) beside the
# queues in the broker's Redis, and other applications name theirs with ':'.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# Keys kombu and Celery keep in the same Redis: a queue of that name breaks every worker.
RESERVED_QUEUES = frozenset({"unacked", "unacked_index", "unacked_mutex"})
RESERVED_QUEUE_PREFIXES = ("celery-task-meta-", "celery-taskset-meta-", "chord-unlock-")
MAX_NAME_BYTES = 255

# Celery's and kombu's own message headers: a caller's header with one of these names
# would overwrite the protocol (the task name among them) and bypass the catalog.
RESERVED_HEADERS = frozenset(
    {
        "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
        "retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr",
        "origin", "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
        "compression",  # kombu would try to decompress the body and drop the task
    }
)  # fmt: skip


@dataclass(frozen=True)
class Submission:
    """A validated Submit: what goes to Celery's `send_task`."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""


def parse_task_name(name: str, field_name: str = "task") -> str:
    """Return `name` if it is a well-formed Celery task name."""
    if not name:
        raise InvalidArgument(field_name, "is required, for example 'tasks.add'")
    if len(name.encode()) > MAX_NAME_BYTES or not _TASK_NAME.fullmatch(name):
        raise InvalidArgument(
            field_name,
            "must be a dotted name of letters, digits, '_', '-', ':' and '.', "
            f"at most {MAX_NAME_BYTES} bytes",
        )
    return name


def parse_task_id(text: str) -> str:
    """Return the canonical form of a task id; ids are UUIDs chosen by the gateway."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidArgument("task_id", "must be a task id returned by Submit (a UUID)") from None


MAX_PUBLISH_RETRIES = 10


def _parse_retry_policy(policy: pb.PublishRetryPolicy) -> dict[str, Any]:
    if policy.max_retries > MAX_PUBLISH_RETRIES:
        raise InvalidArgument(
            "options.retry_policy.max_retries", f"must be at most {MAX_PUBLISH_RETRIES}"
        )
    intervals = {
        name: times.seconds(getattr(policy, name), f"options.retry_policy.{name}")
        for name in ("interval_start", "interval_step", "interval_max")
    }
    return {"retry_policy": {"max_retries": policy.max_retries, **intervals}}


def _parse_timing(options: pb.SubmitOptions, now: datetime) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    if options.HasField("countdown") and options.HasField("eta"):
        raise InvalidArgument("options.eta", "cannot be set together with options.countdown")
    if options.HasField("countdown"):
        parsed["countdown"] = times.seconds(options.countdown, "options.countdown")
    if options.HasField("eta"):
        parsed["eta"] = times.moment(options.eta, "options.eta", now)
    if options.HasField("expires"):
        expires = times.moment(options.expires, "options.expires", now)
        if expires <= now:
            raise InvalidArgument("options.expires", "must be in the future")
        parsed["expires"] = expires
    return parsed


def _parse_options(options: pb.SubmitOptions, now: datetime) -> dict[str, Any]:
    parsed = _parse_timing(options, now)
    if options.queue:
        parsed["queue"] = _parse_queue(options.queue)
    if options.HasField("priority"):
        if not 0 <= options.priority <= 255:
            raise InvalidArgument("options.priority", "must be between 0 and 255")
        parsed["priority"] = options.priority
    if options.HasField("retry_policy"):
        parsed.update(_parse_retry_policy(options.retry_policy))
    if options.headers:
        parsed["headers"] = _parse_headers(dict(options.headers))
    return parsed


def _parse_queue(queue: str) -> str:
    field = "options.queue"
    if len(queue) > MAX_NAME_BYTES or not _QUEUE_NAME.fullmatch(queue):
        raise InvalidArgument(field, "must be letters, digits, '_', '-' and '.', not first '_'")
    if queue in RESERVED_QUEUES or queue.startswith(RESERVED_QUEUE_PREFIXES):
        raise InvalidArgument(field, f"{queue!r} is a name the broker uses itself")
    return queue


MAX_HEADERS = 32
MAX_HEADER_VALUE_BYTES = 4096


def _parse_headers(headers: dict[str, str]) -> dict[str, str]:
    field = "options.headers"
    clash = sorted(RESERVED_HEADERS.intersection(headers))
    if clash:
        raise InvalidArgument(field, f"{clash} are reserved by Celery")
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument(field, f"holds {len(headers)} headers; at most {MAX_HEADERS}")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or len(name) > MAX_NAME_BYTES:
            raise InvalidArgument(field, f"{name!r} is not a header name (letters, digits, _-:.)")
        if len(value.encode()) > MAX_HEADER_VALUE_BYTES:
            raise InvalidArgument(field, f"{name!r} is over {MAX_HEADER_VALUE_BYTES} bytes")
    return headers


def parse_submit(request: pb.SubmitRequest, now: datetime | None = None) -> Submission:
    """Validate a SubmitRequest; raises InvalidArgument naming the first bad field."""
    return Submission(
        task=parse_task_name(request.task),
        args=codec.parse_args(request.args_json),
        kwargs=codec.parse_kwargs(request.kwargs_json),
        options=_parse_options(request.options, now or datetime.now(UTC)),
        idempotency_key=_parse_idempotency_key(request.idempotency_key),
    )


def _parse_idempotency_key(key: str) -> str:
    if len(key.encode()) > MAX_NAME_BYTES:
        raise InvalidArgument("idempotency_key", f"must be at most {MAX_NAME_BYTES} bytes")
    return key
