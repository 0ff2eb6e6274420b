"""Writes built messages to a Redis broker, once per task id.

A publish is one Lua script: it sets the marker `taskgate:published:<task id>`
and LPUSHes the message, or does nothing when the marker is there already; so
a retry after an ambiguous timeout, or a stale idempotency claim taken over,
never queues a second copy. When the broker's Redis is also the result
backend's, the dispatch record is written by the same script: record, marker
and message land together or not at all.
"""

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kombu import Queue
from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskgate.server.errors import GatewayError, Internal, redis_unavailable, unavailable_for
from taskgate.server.publish.batcher import ScriptBatcher, ScriptCall
from taskgate.server.publish.inflight import InflightKeys
from taskgate.server.publish.message import KeyRules, TaskMessage
from taskgate.server.records import RecordWrite
from taskgate.server.redis_urls import place
from taskgate.worker.factory import ConfigurationError

logger = logging.getLogger(__name__)

MARKER_PREFIX = "taskgate:published:"

# KEYS: marker, queue list[, record][, inflight zset, inflight copy].
# ARGV: ttl (0: none), message[, record value][, publish time, task id].
# An odd number of keys carries a record; the inflight pair, when there, comes last.
_PUBLISH_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl = tonumber(ARGV[1])
local function store(key, value)
  if ttl > 0 then redis.call('SET', key, value, 'EX', ttl) else redis.call('SET', key, value) end
end
if #KEYS % 2 == 1 then store(KEYS[3], ARGV[3]) end
store(KEYS[1], '1')
redis.call('LPUSH', KEYS[2], ARGV[2])
if #KEYS >= 4 then
  local copy = KEYS[#KEYS]
  redis.call('ZADD', KEYS[#KEYS - 1], ARGV[#ARGV - 1], ARGV[#ARGV])
  redis.call('HSET', copy, 'queue', KEYS[2], 'message', ARGV[2])
  if ttl > 0 then redis.call('EXPIRE', copy, ttl) end
end
return 1
"""


Push = tuple[TaskMessage, int | None, RecordWrite | None]
"""A message, its marker's TTL and the record written with it, as `push` takes them."""


def _pushed_or_failed(task_id: str, reply: Any) -> bool | GatewayError:
    """A script's reply as `push` reports it, or its error as a value: Unavailable for a
    write Redis refuses for now (READONLY, NOREPLICAS), else Internal, logged (a key of
    the wrong type...): one item's fault fails no other."""
    if not isinstance(reply, BaseException):
        return bool(reply)
    unavailable = unavailable_for("the broker", reply)
    if unavailable is not None:
        return unavailable
    logger.error("the publish of task %s failed: %r", task_id, reply)
    return Internal()


def same_redis(
    url: str,
    other: str,
    options: Mapping[str, Any] | None = None,
    other_options: Mapping[str, Any] | None = None,
) -> bool:
    """True when both URLs (with their transport options, which name a Sentinel set's
    primary) name one Redis database: host, port and db, or sentinels, primary and db."""
    try:
        return place(url, options or {}) == place(other, other_options or {})
    except (ValueError, ConfigurationError):  # an unusual URL: never assume it is the same
        return False


class RedisBroker:
    """Pushes messages as kombu's Redis transport would, through one idempotent script."""

    def __init__(
        self,
        redis: Redis,
        rules: KeyRules,
        *,
        holds_records: bool,
        inflight: InflightKeys | None = None,
    ) -> None:
        self._redis = redis
        self._rules = rules
        self._inflight = inflight
        """Set: each message's copy is kept until it ran (server/publish/reclaim.py)."""
        self._batcher = ScriptBatcher(redis, _PUBLISH_ONCE)
        self._declared: set[str] = set()
        self.holds_records = holds_records
        """True when this Redis is the result backend's too: records go in the script."""

    def marker_key(self, task_id: str) -> str:
        """Where the script marks `task_id` as published."""
        return f"{self._rules.global_keyprefix}{MARKER_PREFIX}{task_id}"

    async def push(self, message: TaskMessage, ttl: int | None, record: RecordWrite | None) -> bool:
        """Publish `message` unless its task id was published; False: it was already.

        `ttl` is how long the marker lives (the dispatch record's TTL); `record`, when
        given, is written in the same script (only when `holds_records`).
        """
        with redis_unavailable("the broker"):
            await self._declare(message.queue)
            pushed = bool(await self._batcher.call(*self._script_call(message, ttl, record)))
        if pushed and message.event is not None:
            await self._send_events([message.event])
        return pushed

    async def push_many(self, pushes: Sequence[Push]) -> list[bool | GatewayError]:
        """`push` for each of `pushes`, in one pipeline: each one's outcome, or its own
        error (Unavailable: a write Redis refused); Unavailable raised when Redis is away."""
        with redis_unavailable("the broker"):
            for queue in {message.queue.name: message.queue for message, _, _ in pushes}.values():
                await self._declare(queue)
            replies = await self._batcher.call_many(
                [self._script_call(message, ttl, record) for message, ttl, record in pushes]
            )
        outcomes = [
            _pushed_or_failed(message.task_id, reply)
            for (message, _, _), reply in zip(pushes, replies, strict=True)
        ]
        events = [
            message.event
            for (message, _, _), pushed in zip(pushes, outcomes, strict=True)
            if pushed is True and message.event is not None
        ]
        if events:
            await self._send_events(events)
        return outcomes

    def _script_call(
        self, message: TaskMessage, ttl: int | None, record: RecordWrite | None
    ) -> ScriptCall:
        """The publish script's KEYS and ARGV for `message`."""
        keys = [self.marker_key(message.task_id), message.key]
        args: list[str | int] = [ttl or 0, message.payload]
        if record is not None:
            keys.append(record.key)
            args.append(record.value)
        if self._inflight is not None:
            keys += [self._inflight.index, self._inflight.copy(message.task_id)]
            args += [repr(time.time()), message.task_id]
        return keys, args

    async def _send_events(self, events: list[tuple[str, str]]) -> None:
        """PUBLISH the `task-sent` events (channel, payload) after their messages, as
        `send_task` does, in one round trip; the tasks are queued whatever happens to
        their events, so a failure is only logged."""
        try:
            if len(events) == 1:
                await self._redis.publish(*events[0])
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, payload in events:
                    pipe.publish(channel, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("%d task-sent event(s) not sent: %s", len(events), exc)

    async def _declare(self, queue: Queue) -> None:
        """kombu's queue declaration, once per queue and process: the binding table
        entries that `celery inspect`, Flower and exchange-routing producers read."""
        if queue.name in self._declared:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, member in self._rules.bindings(queue):
                pipe.sadd(key, member)
            await pipe.execute()
        self._declared.add(queue.name)

    async def close(self) -> None:
        """Release the broker connections."""
        await self._redis.aclose()
