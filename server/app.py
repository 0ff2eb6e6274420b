"""Assembles the gateway: Celery, Redis, the gRPC server, health and reflection."""

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
from celery import Celery
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from taskgate.server.auth import TokenAuthenticator
from taskgate.server.catalog import Catalog
from taskgate.server.config import GatewaySettings
from taskgate.server.dispatch import Dispatcher, create_gateway_app
from taskgate.server.idempotency import IdempotencyKeys
from taskgate.server.listener import bind, grpc_server
from taskgate.server.observability.grpc_metrics import GrpcMetrics, initialize
from taskgate.server.observability.grpc_names import method_types
from taskgate.server.observability.instrumented import (
    MeteredGateway,
    MeteredPublisher,
    MeteredSubmitter,
    count_limit,
)
from taskgate.server.observability.operations import Operations, start_metrics, start_operations
from taskgate.server.observability.tracing import TRACING
from taskgate.server.publish.broker import RedisBroker, same_redis
from taskgate.server.publish.inflight import InflightKeys, inflight_keys
from taskgate.server.publish.message import MessageBuilder
from taskgate.server.publish.publisher import Publisher, own_path_broker_url
from taskgate.server.publish.reclaim import Reclaimer
from taskgate.server.records import DispatchRecords, as_seconds
from taskgate.server.redis_urls import check_urls, connect
from taskgate.server.registry import WorkerRegistry
from taskgate.server.results import ResultStore
from taskgate.server.servicer import TaskService
from taskgate.server.startup_checks import require_broker_transport
from taskgate.server.token_reload import TokenReloader
from taskgate.server.watcher import ResultWatcher
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from taskgate.worker.factory import ConfigurationError, describe

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TaskService"].full_name
HEALTH_SERVICE = cast(ServiceDescriptor, health_pb2.DESCRIPTOR.services_by_name["Health"])
REDIS_CONNECTIONS = 64  # to the result backend, shared by every call of this gateway


@dataclass
class RunningGateway:
    """A started gateway and what must be closed when it stops."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    dispatcher: Dispatcher
    publisher: Publisher
    watcher: ResultWatcher
    registry: WorkerRegistry
    redis: Redis
    operations: Operations
    reloader: TokenReloader | None
    reclaimer: Reclaimer | None = None

    async def stop(self, grace: float) -> None:
        """Say NOT_SERVING at once, let calls in flight finish within `grace`, then close."""
        await self.operations.drain()
        await self.operations.close()
        if self.reloader is not None:
            await self.reloader.close()
        await self.server.stop(grace)
        if self.reclaimer is not None:
            await self.reclaimer.close()
        await self.registry.close()
        await self.watcher.close()
        await self.redis.aclose()
        await self.publisher.close()
        await asyncio.to_thread(self.dispatcher.close)


def idempotency_retention(settings: GatewaySettings, result_expires: float | None) -> float:
    """How long idempotency keys live: never shorter than results are kept."""
    default = result_expires or 86400.0
    retention = settings.idempotency_retention_seconds or default
    if retention < default:
        raise ConfigurationError(
            f"TASKGATE_IDEMPOTENCY_RETENTION={retention:g}s is shorter than result_expires "
            f"({default:g}s): a retried Submit could run a task twice while its result is kept"
        )
    return retention


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


def catalog_and_registry(
    settings: GatewaySettings, dispatcher: Dispatcher
) -> tuple[Catalog, WorkerRegistry]:
    """The catalog, checked against the workers' first answer and, with
    TASKGATE_REQUIRE_REGISTERED, against what live workers serve at each Submit."""
    registry = WorkerRegistry(
        dispatcher,
        settings.workers_refresh_seconds,
        on_first_view=lambda view: catalog.warn_unmatched(view.tasks),
    )
    catalog = Catalog(
        settings.task_patterns, registry.served if settings.require_registered else None
    )
    return catalog, registry


async def start(settings: GatewaySettings, shared_port: bool = False) -> RunningGateway:
    """Build everything and start serving on `settings.listen` (`shared_port`: as one
    process of a group, server/process_group.py)."""
    if settings.trace_exporters is not None:
        TRACING.enable_otel(settings.trace_exporters)
    celery_app = create_gateway_app(settings.celery)
    require_broker_transport(celery_app)
    check_urls(celery_app.conf)
    logger.info("settings in force: %s", describe(celery_app))
    redis = backend_redis(celery_app)
    dispatcher = Dispatcher(celery_app, settings.publish_threads)
    watcher = ResultWatcher(redis)
    catalog, registry = catalog_and_registry(settings, dispatcher)
    result_expires = as_seconds(celery_app.conf.result_expires)
    records = DispatchRecords(redis, result_expires)
    reclaim = reclaimer(settings, celery_app, redis, dispatcher)
    publish = publisher(celery_app, dispatcher, records, None if reclaim is None else reclaim.keys)
    retention = idempotency_retention(settings, result_expires)
    servicer = TaskService(
        gateway=MeteredGateway(
            dispatcher=dispatcher,
            records=records,
            store=ResultStore(redis, dispatcher.result_key, result_expires),
            watcher=watcher,
            registry=registry,
        ),
        submitter=MeteredSubmitter(
            catalog=catalog,
            dispatcher=dispatcher,
            publisher=publish,
            keys=IdempotencyKeys(redis, retention),
            max_start_delay=settings.max_start_delay_seconds,
        ),
        catalog=catalog,
        registry=registry,
        max_wait_seconds=settings.max_wait_seconds,
        tracebacks=settings.tracebacks,
    )
    authenticator = TokenAuthenticator.from_file(settings.security.tokens_file)
    types = method_types((pb.DESCRIPTOR.services_by_name["TaskService"], HEALTH_SERVICE))
    initialize(types)
    server = grpc_server(
        settings.security,
        authenticator,
        settings.max_wait_seconds,
        metrics=GrpcMetrics(types),
        on_limit=count_limit,
        shared_port=shared_port,
    )
    pb_grpc.add_TaskServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = bind(server, settings.listen, settings.security, shared_port)
    start_metrics(settings.observability)
    await server.start()
    operations = await start_operations(
        settings.observability, celery_app, redis, health_servicer, SERVICE_NAME
    )
    registry.start()
    if reclaim is not None:
        reclaim.start()
    reloader = None
    if settings.security.tokens_file is not None:
        reloader = TokenReloader(authenticator, settings.security.tokens_file)
        reloader.start()
    return RunningGateway(
        server,
        port,
        health_servicer,
        dispatcher,
        publish,
        watcher,
        registry,
        redis,
        operations,
        reloader,
        reclaim,
    )


async def serve(
    settings: GatewaySettings,
    shared_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; `on_listening` is called
    once the gateway serves."""
    running = await start(settings, shared_port)
    logger.info("task catalog: %s (celery.* never)", ", ".join(settings.task_patterns))
    host = settings.listen.rpartition(":")[0]
    logger.info("taskgate listening on %s:%d", host, running.port)
    if on_listening is not None:
        on_listening()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stopping: calls in flight have %.1fs to finish", settings.grace_seconds)
    await running.stop(settings.grace_seconds)
