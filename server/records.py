"""Dispatch records: the gateway's own memory of which task ids it handed out.

Celery answers PENDING for any id it never saw (celery/celery#3596); a record
lets the gateway answer NOT_FOUND instead. Records live in Redis, so every
gateway replica sees every other replica's tasks.
"""

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskgate.server.errors import redis_unavailable

logger = logging.getLogger(__name__)

_PREFIX = "taskgate:task:"


@dataclass(frozen=True)
class RecordWrite:
    """One record as stored: its key, its JSON and its TTL in seconds (None: none)."""

    key: str
    value: str
    ttl: int | None


@dataclass(frozen=True)
class DispatchRecord:
    """What the gateway knows of a task it dispatched."""

    task: str
    submitted_at: float
    idempotency_key: str = ""
    delay: float = 0.0
    """Seconds from submission until the task may start (countdown or eta)."""

    @classmethod
    def decode(cls, raw: str | bytes) -> "DispatchRecord":
        """Parse a stored record."""
        return cls(**json.loads(raw))

    @property
    def earliest_start(self) -> float:
        """The Unix time before which no worker starts the task."""
        return self.submitted_at + max(self.delay, 0.0)


def as_seconds(value: float | timedelta | None) -> float | None:
    """Celery's `result_expires` (seconds or a timedelta) in seconds; None or 0: never."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value or None


class DispatchRecords:
    """Reads and writes dispatch records in the result backend's Redis.

    A record outlives the result it stands for: it is kept for twice
    `result_expires` after the earliest start, so that "expired" can be told
    from "never existed" for as long again.
    """

    def __init__(self, redis: Redis, result_expires: float | None) -> None:
        self._redis = redis
        self._result_expires = result_expires

    def result_expired(self, record: DispatchRecord, now: float) -> bool:
        """True when any result the task stored would have expired by `now`.

        Every state a worker stores lives `result_expires` seconds, and none is stored
        before the earliest start; so with nothing stored, the task is either still
        queued or, past this point, done and expired. The second is assumed: a queue
        backlog longer than `result_expires` (a day by default) is an outage.
        """
        expires = self._result_expires
        return expires is not None and now > record.earliest_start + expires

    def ttl(self, record: DispatchRecord) -> int | None:
        """How long `record` is kept, in whole seconds; None: for ever."""
        if self._result_expires is None:
            return None  # results never expire, so neither do records
        return int(max(record.delay, 0.0) + 2 * self._result_expires) + 1

    def write(self, task_id: str, record: DispatchRecord) -> RecordWrite:
        """The stored form of `record`, for `put` or for a publish script."""
        return RecordWrite(self.key(task_id), json.dumps(record.__dict__), self.ttl(record))

    async def put(self, task_id: str, record: DispatchRecord) -> None:
        """Store the record before the task is published, so no reader misses it."""
        write = self.write(task_id, record)
        with redis_unavailable("the result backend"):
            await self._redis.set(write.key, write.value, ex=write.ttl)

    async def forget(self, task_id: str) -> None:
        """Drop the record of a task whose publish failed, so that its id reads NOT_FOUND
        rather than PENDING for ever; best effort: the backend may be what failed."""
        try:
            await self._redis.delete(self.key(task_id))
        except (RedisError, OSError) as exc:
            logger.info("could not drop the record of unpublished task %s: %s", task_id, exc)

    def key(self, task_id: str) -> str:
        """Where the record of `task_id` is stored."""
        return _PREFIX + task_id
