"""The gateway's Redis clients, with Celery's and kombu's socket timeouts, and what it
builds on the broker's: the publish path (its own, or `send_task`) and the reclaimer."""

import logging
from typing import Any

from celery import Celery
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from taskgate.server.config import GatewaySettings
from taskgate.server.dispatch import Dispatcher
from taskgate.server.observability.instrumented import MeteredPublisher
from taskgate.server.publish.broker import RedisBroker, same_redis
from taskgate.server.publish.inflight import InflightKeys, inflight_keys
from taskgate.server.publish.message import MessageBuilder
from taskgate.server.publish.publisher import Publisher, own_path_broker_url
from taskgate.server.publish.reclaim import Reclaimer
from taskgate.server.records import DispatchRecords
from taskgate.server.redis_urls import connect

logger = logging.getLogger(__name__)

REDIS_CONNECTIONS = 64  # to each Redis, shared by every call of this gateway


def redis_client(
    url: str, options: dict[str, Any], timeouts: tuple[float, float], retry: Retry
) -> Redis:
    """An asyncio client for `url` (one Redis, or the primary a Sentinel set names, per
    `options`), shared by every call of this gateway; `timeouts`: socket, connect."""
    # A bounded pool that makes callers wait for a connection: redis-py's default pool
    # refuses the 101st concurrent command outright ("Too many connections").
    socket_timeout, connect_timeout = timeouts
    return connect(
        url,
        options,
        max_connections=REDIS_CONNECTIONS,
        retry=retry,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
    )


def backend_redis(celery_app: Celery) -> Redis:
    """The gateway's asyncio client for the result backend, with Celery's socket timeouts."""
    conf = celery_app.conf
    return redis_client(
        str(conf.result_backend),
        dict(conf.result_backend_transport_options or {}),
        (float(conf.redis_socket_timeout or 5.0), float(conf.redis_socket_connect_timeout or 4.0)),
        # A pooled connection that Redis closed (a restart) is reconnected, not reported;
        # a timeout is not retried: a stuck Redis costs a call one socket timeout.
        Retry(ExponentialBackoff(cap=0.5, base=0.05), 2, supported_errors=(RedisConnectionError,)),
    )


def broker_client(celery_app: Celery, url: str) -> Redis:
    """An asyncio client for the own path's broker, with kombu's socket timeouts."""
    options = dict(celery_app.conf.broker_transport_options or {})
    return redis_client(
        url,
        options,
        (
            float(options.get("socket_timeout") or 5.0),
            float(options.get("socket_connect_timeout") or 4.0),
        ),
        # One immediate reconnect for a pooled connection Redis closed; every other retry
        # is the publish policy's, fitted to the call's deadline (Publisher).
        Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


def publisher(
    celery_app: Celery,
    dispatcher: Dispatcher,
    records: DispatchRecords,
    inflight: InflightKeys | None = None,
) -> Publisher:
    """taskgate's own Redis publish path when the broker allows it, else `send_task`;
    with `inflight`, each message's copy is kept for the reclaimer."""
    url = own_path_broker_url(celery_app)
    if url is None:
        logger.info("publishing with Celery's send_task (broker is not a Redis or Sentinel URL)")
        return MeteredPublisher(dispatcher, records)
    options = dict(celery_app.conf.broker_transport_options or {})
    client = broker_client(celery_app, url)
    builder = MessageBuilder(celery_app)
    conf = celery_app.conf
    backend_options = dict(conf.result_backend_transport_options or {})
    holds_records = same_redis(url, str(conf.result_backend), options, backend_options)
    broker = RedisBroker(client, builder.rules, holds_records=holds_records, inflight=inflight)
    logger.info(
        "publishing to the Redis broker directly (records in the same script: %s)", holds_records
    )
    return MeteredPublisher(dispatcher, records, builder, broker)


def reclaimer(
    settings: GatewaySettings, celery_app: Celery, backend: Redis, dispatcher: Dispatcher
) -> Reclaimer | None:
    """The reclaimer of lost messages, on by default with the own path to Redis."""
    url = own_path_broker_url(celery_app)
    keys = inflight_keys(celery_app) if settings.reclaim.enabled and url else None
    if url is None or keys is None:
        return None
    client = broker_client(celery_app, url)
    return Reclaimer(client, backend, keys, dispatcher.result_key, settings.reclaim)
