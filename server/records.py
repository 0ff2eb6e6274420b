"""Dispatch records: the gateway's own memory of which task ids it handed out.

Celery answers PENDING for any id it never saw (celery/celery#3596); a record
lets the gateway answer NOT_FOUND instead. Records live in Redis, so every
gateway replica sees every other replica's tasks.
"""

import json
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis

from server.errors import redis_unavailable

_PREFIX = "taskgate:task:"


@dataclass(frozen=True)
class DispatchRecord:
    """What the gateway knows of a task it dispatched."""

    task: str
    submitted_at: float
    idempotency_key: str = ""


def as_seconds(value: float | timedelta | None) -> float | None:
    """Celery's `result_expires` (seconds or a timedelta) in seconds; None or 0: never."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value or None


def ttl_seconds(result_expires: float | None, delay: float) -> int | None:
    """Keep a record as long as the task's result could be kept, counting any delay."""
    if not result_expires:
        return None  # results never expire, so neither do records
    return int(result_expires + max(delay, 0.0)) + 1


class DispatchRecords:
    """Reads and writes dispatch records in the result backend's Redis."""

    def __init__(self, redis: Redis, result_expires: float | None) -> None:
        self._redis = redis
        self._result_expires = result_expires

    async def put(self, task_id: str, record: DispatchRecord, delay: float) -> None:
        """Store the record before the task is published, so no reader misses it."""
        value = json.dumps(record.__dict__)
        with redis_unavailable("the result backend"):
            await self._redis.set(
                _PREFIX + task_id, value, ex=ttl_seconds(self._result_expires, delay)
            )

    async def get(self, task_id: str) -> DispatchRecord | None:
        """The record for `task_id`, or None when there is none (never, or expired)."""
        with redis_unavailable("the result backend"):
            raw = await self._redis.get(_PREFIX + task_id)
        return None if raw is None else DispatchRecord(**json.loads(raw))
