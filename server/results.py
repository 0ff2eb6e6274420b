"""Reads task states from Celery's Redis result backend and turns them into replies."""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import states
from redis.asyncio import Redis

from taskgate.server import codec
from taskgate.server.errors import redis_unavailable
from taskgate.v1 import task_service_pb2 as pb

_STATES = {
    states.PENDING: pb.TASK_STATE_PENDING,
    states.RECEIVED: pb.TASK_STATE_RECEIVED,
    states.STARTED: pb.TASK_STATE_STARTED,
    states.RETRY: pb.TASK_STATE_RETRY,
    states.SUCCESS: pb.TASK_STATE_SUCCESS,
    states.FAILURE: pb.TASK_STATE_FAILURE,
    states.REVOKED: pb.TASK_STATE_REVOKED,
}


# The class Celery stores in place of an exception it cannot pickle on the worker.
_WRAPPER = "UnpickleableExceptionWrapper"


def _unwrap_kombu_types(obj: dict[str, Any]) -> Any:
    # kombu's JSON wraps datetimes, UUIDs and decimals as {"__type__", "__value__"};
    # callers in other languages get the plain text form.
    if obj.keys() == {"__type__", "__value__"}:
        return obj["__value__"]
    return obj


@dataclass(frozen=True)
class TaskSnapshot:
    """A task's state as Celery stored it at one moment."""

    state_name: str
    result: Any = None
    traceback: str | None = None
    extended: Mapping[str, Any] = field(default_factory=dict)
    """The rest of Celery's meta: `date_done`, and with `result_extended` also
    `name`, `worker` and `retries`."""

    @classmethod
    def decode(cls, payload: bytes | str) -> "TaskSnapshot":
        """Parse the JSON that a worker stored under `celery-task-meta-<id>`."""
        meta = json.loads(payload, object_hook=_unwrap_kombu_types)
        return cls(meta.pop("status"), meta.pop("result", None), meta.pop("traceback", None), meta)

    @property
    def state(self) -> "pb.TaskState.ValueType":
        """The state as TaskState; any state Celery does not define is CUSTOM."""
        return _STATES.get(self.state_name, pb.TASK_STATE_CUSTOM)

    @property
    def ready(self) -> bool:
        """True once the task has finished for good."""
        return self.state_name in states.READY_STATES

    @property
    def succeeded(self) -> bool:
        """True when the task finished with a result."""
        return self.state_name == states.SUCCESS

    def meta_json(self) -> str:
        """A custom state's meta as JSON text; empty for Celery's own states."""
        if self.state == pb.TASK_STATE_CUSTOM and self.result is not None:
            return codec.dumps(self.result)
        return ""

    def error(self) -> pb.TaskError:
        """The stored exception of a failed or revoked task, as the task raised it."""
        result = self.result if isinstance(self.result, dict) else {}
        kind = result.get("exc_type", self.state_name)
        module = result.get("exc_module")
        args = result.get("exc_message", self.result)
        if kind == _WRAPPER and isinstance(args, list) and len(args) >= 3:
            # Celery could not pickle the task's exception (an `__init__` taking other
            # arguments than its `args`) and stored a wrapper that names the real one:
            # [module, class name, args, repr].
            module, kind, args = args[0], args[1], args[2]
        return pb.TaskError(
            type=str(kind),
            module=str(module or ""),
            message=_message(args),
            traceback=self.traceback or "",
        )


def _message(args: Any) -> str:
    """An exception's message from its stored `args`, as `str(exc)` would say it."""
    if isinstance(args, list | tuple):
        return str(args[0]) if len(args) == 1 else ", ".join(map(str, args))
    return "" if args is None else str(args)


PENDING = TaskSnapshot(states.PENDING)


# Store REVOKED only where no worker has taken the task further: nothing stored yet
# (still queued), or RETRY (waiting for its next attempt). Then publish, as Celery does.
_MARK_REVOKED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if not ok or meta['status'] ~= 'RETRY' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class ResultStore:
    """Reads task states from the result backend's Redis, and marks cancelled ones."""

    def __init__(
        self, redis: Redis, key_for: Callable[[str], bytes], result_expires: float | None
    ) -> None:
        self._redis = redis
        self.key_for = key_for
        self._expires = int(result_expires or 0)
        self._mark_revoked = redis.register_script(_MARK_REVOKED)

    async def read(self, task_id: str) -> TaskSnapshot | None:
        """The stored snapshot, or None when Celery has stored nothing for the id."""
        with redis_unavailable("the result backend"):
            payload = await self._redis.get(self.key_for(task_id))
        return None if payload is None else TaskSnapshot.decode(payload)

    async def read_with(self, task_id: str, other_key: str) -> tuple[TaskSnapshot | None, Any]:
        """The stored snapshot and the raw value of `other_key`, in one round trip."""
        with redis_unavailable("the result backend"):
            payload, other = await self._redis.mget(self.key_for(task_id), other_key)
        return (None if payload is None else TaskSnapshot.decode(payload)), other

    async def mark_revoked(self, task_id: str, task: str) -> bool:
        """Store REVOKED unless a worker already started the task; True when stored."""
        meta: dict[str, Any] = {
            "status": states.REVOKED,
            "result": {
                "exc_type": "TaskRevokedError",
                "exc_message": ["revoked"],
                "exc_module": "celery.exceptions",
            },
            "traceback": None,
            "children": [],
            "date_done": datetime.now(UTC).isoformat(),
            "task_id": task_id,
            "name": task,
        }
        with redis_unavailable("the result backend"):
            stored = await self._mark_revoked(
                keys=[self.key_for(task_id)], args=[json.dumps(meta), self._expires]
            )
        return bool(stored)
