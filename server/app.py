"""Assembles the gateway: Celery, Redis, the gRPC server, health and reflection."""

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from server.auth import TokenAuthenticator
from server.catalog import Catalog
from server.config import GatewaySettings, SecuritySettings
from server.dispatch import Dispatcher, create_gateway_app
from server.gateway import Gateway
from server.idempotency import IdempotencyKeys
from server.interceptors import GatewayInterceptor
from server.limits import ConcurrencyLimit, RateLimit
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


def gateway_interceptor(security: SecuritySettings) -> GatewayInterceptor:
    """Authentication and limits as configured."""
    authenticator = TokenAuthenticator.from_file(security.tokens_file)
    if not authenticator.enabled:
        logger.warning("no TASKGATE_TOKENS_FILE: every caller may call (authentication off)")
    rate = None
    if security.rate_per_second:
        burst = security.rate_burst or security.rate_per_second
        rate = RateLimit(security.rate_per_second, max(burst, 1.0))
    return GatewayInterceptor(authenticator, ConcurrencyLimit(security.max_concurrent_calls), rate)


def bind(server: grpc.aio.Server, listen: str, security: SecuritySettings) -> int:
    """Listen on `listen`, with TLS (and client certificates) when configured."""
    if security.tls_cert is None or security.tls_key is None:
        return server.add_insecure_port(listen)
    try:
        # gRPC only says "Failed to bind" for a bad certificate or key: check them first.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            security.tls_cert, security.tls_key
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"TASKGATE_TLS_CERT and TASKGATE_TLS_KEY are not a PEM certificate and its key: {exc}"
        ) from None
    credentials = grpc.ssl_server_credentials(
        [(security.tls_key.read_bytes(), security.tls_cert.read_bytes())],
        root_certificates=security.tls_client_ca.read_bytes() if security.tls_client_ca else None,
        require_client_auth=security.tls_client_ca is not None,
    )
    return server.add_secure_port(listen, credentials)


async def start(settings: GatewaySettings) -> RunningGateway:
    """Build everything and start serving on `settings.listen`."""
    celery_app = create_gateway_app(settings.celery)
    logger.info("settings in force: %s", describe(celery_app))
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
    redis = Redis(connection_pool=pool)
    dispatcher = Dispatcher(celery_app, settings.publish_threads)
    watcher = ResultWatcher(redis)
    registry = WorkerRegistry(dispatcher, settings.workers_refresh_seconds)
    catalog = Catalog(settings.task_patterns)
    result_expires = as_seconds(celery_app.conf.result_expires)
    records = DispatchRecords(redis, result_expires)
    submitter = Submitter(
        catalog=catalog,
        dispatcher=dispatcher,
        records=records,
        keys=IdempotencyKeys(redis, idempotency_retention(settings, result_expires)),
    )
    gateway = Gateway(
        dispatcher=dispatcher,
        records=records,
        store=ResultStore(redis, dispatcher.result_key, result_expires),
        watcher=watcher,
        registry=registry,
    )
    server = grpc.aio.server(
        interceptors=[gateway_interceptor(settings.security)],
        options=[
            ("grpc.max_receive_message_length", settings.security.max_message_bytes),
            ("grpc.max_send_message_length", settings.security.max_message_bytes),
            # gRPC core's own queue of calls not yet handed to a handler is far smaller
            # than our limit, and cancels the overflow silently: size it to match.
            ("grpc.server.max_pending_requests", settings.security.max_concurrent_calls),
            (
                "grpc.server.max_pending_requests_hard_limit",
                2 * settings.security.max_concurrent_calls,
            ),
        ],
    )
    servicer = TaskService(
        gateway=gateway,
        submitter=submitter,
        catalog=catalog,
        registry=registry,
        max_wait_seconds=settings.max_wait_seconds,
    )
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
