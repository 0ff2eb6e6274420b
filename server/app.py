"""Assembles the gateway: Celery, Redis, the gRPC server, health and reflection."""

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio import Redis

from taskgate.server.auth import TokenAuthenticator
from taskgate.server.catalog import Catalog
from taskgate.server.clients import backend_redis, publisher, reclaimer
from taskgate.server.config import GatewaySettings
from taskgate.server.dispatch import Dispatcher, create_gateway_app
from taskgate.server.idempotency import IdempotencyKeys
from taskgate.server.listener import bind, grpc_server
from taskgate.server.observability.grpc_metrics import GrpcMetrics, initialize
from taskgate.server.observability.grpc_names import method_types
from taskgate.server.observability.instrumented import (
    MeteredGateway,
    MeteredSubmitter,
    count_limit,
)
from taskgate.server.observability.operations import Operations, start_metrics, start_operations
from taskgate.server.observability.tracing import TRACING
from taskgate.server.publish.publisher import Publisher
from taskgate.server.publish.reclaim import Reclaimer
from taskgate.server.records import DispatchRecords, as_seconds
from taskgate.server.redis_urls import check_urls
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
