"""Starts and stops what an operator watches: readiness, `/metrics`, the queue lengths."""

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from celery import Celery
from grpc_health.v1 import health
from redis.asyncio import Redis

from taskgate.server.config import ObservabilitySettings
from taskgate.server.observability.metrics import serve_metrics
from taskgate.server.observability.queue_depth import (
    AmqpQueueLengths,
    QueueDepth,
    QueueLengths,
    RedisQueueLengths,
    known_queues,
)
from taskgate.server.observability.readiness import Readiness, ReadinessPolicy
from taskgate.server.publish.message import KeyRules
from taskgate.server.startup_checks import BrokerProbe, problems

logger = logging.getLogger(__name__)


@dataclass
class Operations:
    """The running pieces, closed when the gateway stops."""

    readiness: Readiness
    broker_probe: BrokerProbe
    queue_depth: QueueDepth | None

    async def drain(self) -> None:
        """Both health statuses NOT_SERVING: the gateway is stopping."""
        await self.readiness.drain()

    async def close(self) -> None:
        """Stop the background reads."""
        if self.queue_depth is not None:
            await self.queue_depth.close()
        await asyncio.to_thread(self.broker_probe.close)


def start_metrics(settings: ObservabilitySettings) -> int | None:
    """Serve `/metrics` when configured (a taken port stops the start); the port, or None."""
    if settings.metrics_listen is None:
        logger.info("metrics off (TASKGATE_METRICS_LISTEN is empty)")
        return None
    port = serve_metrics(settings.metrics_listen)
    host = settings.metrics_listen.rpartition(":")[0]
    logger.info("metrics on http://%s:%d/metrics", host, port)
    return port


def _queue_lengths(app: Celery) -> QueueLengths:
    url = str(app.conf.broker_url)
    queues = known_queues(app)
    if urlsplit(url).scheme not in ("redis", "rediss"):
        return AmqpQueueLengths(app, queues)
    options = dict(app.conf.broker_transport_options or {})
    client = Redis.from_url(
        url,
        socket_timeout=float(options.get("socket_timeout") or 5.0),
        socket_connect_timeout=float(options.get("socket_connect_timeout") or 4.0),
        max_connections=2,
    )
    return RedisQueueLengths(client, KeyRules.of(options), queues)


async def start_operations(
    settings: ObservabilitySettings,
    app: Celery,
    backend: Redis,
    servicer: health.aio.HealthServicer,
    service: str,
) -> Operations:
    """Health at once (readiness from a first check), then the background reads."""
    policy = ReadinessPolicy(
        settings.readiness_interval_seconds,
        settings.readiness_failures,
        settings.readiness_successes,
    )
    probe = BrokerProbe(app)
    readiness = Readiness(servicer, service, lambda: problems(probe, app, backend), policy)
    await readiness.start()
    depth = None
    if settings.metrics_listen is not None:
        depth = QueueDepth(_queue_lengths(app))
        depth.start()
    return Operations(readiness, probe, depth)
