"""`celery_queue_length`: the messages waiting in each queue the gateway knows, read in the
background every few seconds, never while a scrape waits.

On a Redis broker a queue is one list per priority step (`celery`, `celery\\x06\\x163`,
...; see server/publish/message.py): the length is their sum, as Flower counts it.
On RabbitMQ a passive `queue_declare` answers it.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from redis.asyncio import Redis

from taskgate.server import background
from taskgate.server.observability import metrics
from taskgate.server.publish.message import KeyRules

logger = logging.getLogger(__name__)

READ_EVERY_SECONDS = 5.0


def known_queues(app: Celery) -> list[str]:
    """The configured queues (`task_queues`, else the default one) and those named in
    `task_routes` mappings; a route computed by a function is not known ahead."""
    names = set(app.amqp.queues) | {str(app.conf.task_default_queue)}
    routes: Any = app.conf.task_routes or {}
    for table in routes if isinstance(routes, list | tuple) else [routes]:
        if isinstance(table, dict):
            names.update(_routed_queue(route) for route in table.values())
    return sorted(name for name in names if name)


def _routed_queue(route: Any) -> str:
    if isinstance(route, str):
        return route
    queue = route.get("queue") if isinstance(route, dict) else None
    return str(getattr(queue, "name", queue) or "")


class RedisQueueLengths:
    """Reads the queues' lists on a Redis broker: every priority step summed, one round trip."""

    def __init__(self, broker: Redis, rules: KeyRules, queues: Iterable[str]) -> None:
        self._broker = broker
        self._keys = {
            queue: [rules.queue_key(queue, step) for step in rules.priority_steps]
            for queue in queues
        }

    async def read(self) -> dict[str, int]:
        """Each queue's length."""
        async with self._broker.pipeline(transaction=False) as pipe:
            for keys in self._keys.values():
                for key in keys:
                    pipe.llen(key)
            lengths = iter(await pipe.execute())
        return {queue: sum(next(lengths) for _ in keys) for queue, keys in self._keys.items()}

    async def close(self) -> None:
        """Close the broker connections."""
        await self._broker.aclose()


class AmqpQueueLengths:
    """Reads the queues on RabbitMQ with a passive `queue_declare`, which answers the
    message count (priorities are one queue there) without creating a queue."""

    def __init__(self, app: Celery, queues: Iterable[str]) -> None:
        self._app = app
        self._queues = list(queues)

    async def read(self) -> dict[str, int]:
        """Each queue's length; a queue not declared yet holds nothing."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> dict[str, int]:
        lengths = {}
        timeout = max(1, round(float(self._app.conf.broker_connection_timeout or 4.0)))
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=timeout)
            for queue in self._queues:
                channel: Any = connection.channel()  # kombu types it as StdChannel
                try:
                    lengths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except connection.channel_errors:  # 404: not declared yet
                    lengths[queue] = 0
                finally:
                    with contextlib.suppress(*connection.channel_errors):
                        channel.close()
        return lengths

    async def close(self) -> None:
        """Nothing is held between reads."""


QueueLengths = RedisQueueLengths | AmqpQueueLengths


class QueueDepth:
    """Sets `celery_queue_length` for each queue every READ_EVERY_SECONDS."""

    def __init__(self, lengths: QueueLengths) -> None:
        self._lengths = lengths
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Read now and then every few seconds, in the background."""
        self._task = asyncio.create_task(self._run(), name="queue-depth")

    async def _run(self) -> None:
        while True:
            try:
                for queue, length in (await self._lengths.read()).items():
                    metrics.QUEUE_LENGTH.labels(queue).set(length)
            except Exception as exc:  # the broker is down: readiness says so; keep the last
                logger.debug("could not read the queue lengths: %s", exc)
            await asyncio.sleep(READ_EVERY_SECONDS)

    async def close(self) -> None:
        """Stop reading."""
        await background.stop(self._task)
        await self._lengths.close()
