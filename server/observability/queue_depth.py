"""`celery_queue_length`: the messages waiting in each queue the gateway knows, read in the
background every few seconds, never while a scrape waits.

On a Redis broker a queue is one list per priority step (`celery`, `celery\\x06\\x163`,
...; see server/publish/message.py): the length is their sum, as Flower counts it.
Other brokers (RabbitMQ) are not read: the series is absent there.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from redis.asyncio import Redis

from server.observability import metrics
from server.publish.message import KeyRules

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


class QueueDepth:
    """Sets `celery_queue_length` for each queue every READ_EVERY_SECONDS."""

    def __init__(self, broker: Redis, rules: KeyRules, queues: Iterable[str]) -> None:
        self._broker = broker
        self._keys = {
            queue: [rules.queue_key(queue, step) for step in rules.priority_steps]
            for queue in queues
        }
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Read now and then every few seconds, in the background."""
        self._task = asyncio.create_task(self._run(), name="queue-depth")

    async def read(self) -> dict[str, int]:
        """Each queue's length, every priority list summed (one round trip)."""
        async with self._broker.pipeline(transaction=False) as pipe:
            for keys in self._keys.values():
                for key in keys:
                    pipe.llen(key)
            lengths = iter(await pipe.execute())
        return {queue: sum(next(lengths) for _ in keys) for queue, keys in self._keys.items()}

    async def _run(self) -> None:
        while True:
            try:
                for queue, length in (await self.read()).items():
                    metrics.QUEUE_LENGTH.labels(queue).set(length)
            except Exception as exc:  # the broker is down: readiness says so; keep the last
                logger.debug("could not read the queue lengths: %s", exc)
            await asyncio.sleep(READ_EVERY_SECONDS)

    async def close(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
