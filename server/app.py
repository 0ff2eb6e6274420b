"""Assembles the gateway: Celery, Redis, the gRPC server, health and reflection."""

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from celery import Celery
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from server.catalog import Catalog
from server.config import GatewaySettings
from server.dispatch import Dispatcher, create_gateway_app
from server.gateway import Gateway
from server.idempotency import IdempotencyKeys
from server.listener import bind, grpc_server
from server.records import DispatchRecords, as_seconds
from server.registry import WorkerRegistry
from server.results import ResultStore
from server.servicer import TaskService
from server.submitter import Submitter
from server.watcher import ResultWatcher
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from worker.factory import ConfigurationError, describe

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TaskService"].full_name
REDIS_CONNECTIONS = 64  # to the result backend, shared by every call of this gateway


@dataclass
class RunningGateway:
    """A started gateway and what must be closed when it stops."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    dispatcher: Dispatcher
    watcher: ResultWatcher
    registry: WorkerRegistry
    redis: Redis

    async def stop(self, grace: float) -> None:
        """Say NOT_SERVING at once, let calls in flight finish within `grace`, then close."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.registry.close()
        await self.watcher.close()
        await self.redis.aclose()
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


def backend_redis(celery_app: Celery) -> Redis:
    """The gateway's asyncio client for the result backend, with Celery's socket timeouts."""
    socket_timeout = float(celery_app.conf.redis_socket_timeout or 5.0)
    # A bounded pool that makes callers wait for a connection: redis-py's default pool
    # refuses the 101st concurrent command outright ("Too many connections").
    pool = BlockingConnectionPool.from_url(
        str(celery_app.conf.result_backend),
        max_connections=REDIS_CONNECTIONS,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=float(celery_app.conf.redis_socket_connect_timeout or 4.0),
        health_check_interval=30,
        # A pooled connection that Redis closed (a restart) is reconnected, not reported;
        # a timeout is not retried: a stuck Redis costs a call one socket timeout.
        retry=Retry(
            ExponentialBackoff(cap=0.5, base=0.05),
            retries=2,
            supported_errors=(RedisConnectionError,),
        ),
    )
    return Redis(connection_pool=pool)


async def start(settings: GatewaySettings) -> RunningGateway:
    """Build everything and start serving on `settings.listen`."""
    celery_app = create_gateway_app(settings.celery)
    logger.info("settings in force: %s", describe(celery_app))
    redis = backend_redis(celery_app)
    dispatcher = Dispatcher(celery_app, settings.publish_threads)
    watcher = ResultWatcher(redis)
    registry = WorkerRegistry(dispatcher, settings.workers_refresh_seconds)
    catalog = Catalog(settings.task_patterns)
    result_expires = as_seconds(celery_app.conf.result_expires)
    records = DispatchRecords(redis, result_expires)
    retention = idempotency_retention(settings, result_expires)
    servicer = TaskService(
        gateway=Gateway(
            dispatcher=dispatcher,
            records=records,
            store=ResultStore(redis, dispatcher.result_key, result_expires),
            watcher=watcher,
            registry=registry,
        ),
        submitter=Submitter(
            catalog=catalog,
            dispatcher=dispatcher,
            records=records,
            keys=IdempotencyKeys(redis, retention),
            max_start_delay=settings.max_start_delay_seconds,
        ),
        catalog=catalog,
        registry=registry,
        max_wait_seconds=settings.max_wait_seconds,
    )
    server = grpc_server(settings.security, settings.max_wait_seconds)
    pb_grpc.add_TaskServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = bind(server, settings.listen, settings.security)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    registry.start()
    return RunningGateway(server, port, health_servicer, dispatcher, watcher, registry, redis)


async def serve(settings: GatewaySettings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start(settings)
    logger.info("task catalog: %s (celery.* never)", ", ".join(settings.task_patterns))
    host = settings.listen.rpartition(":")[0]
    logger.info("taskgate listening on %s:%d", host, running.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stopping: calls in flight have %.1fs to finish", settings.grace_seconds)
    await running.stop(settings.grace_seconds)
