"""What the gateway checks before it serves: the broker and the result backend.

A broker URL no transport can serve (`redsi://`) can never work: the gateway
refuses to start. A broker or backend that does not answer, or refuses (wrong
RabbitMQ credentials, an unknown vhost), may come back or be fixed without
touching the gateway: it starts degraded, says so in the log, and reports
NOT_SERVING for the TaskService until both answer (server/observability/readiness.py
asks them for the gateway's whole life).
"""

import asyncio
import logging
from collections.abc import Awaitable

from celery import Celery
from redis.asyncio import Redis

from taskgate.worker.factory import ConfigurationError, sanitized_url

logger = logging.getLogger(__name__)


def require_broker_transport(app: Celery) -> None:
    """Raise ConfigurationError when no kombu transport serves the broker URL's scheme."""
    url = sanitized_url(str(app.conf.broker_url))
    try:
        with app.connection_for_write() as connection:
            connection.transport  # noqa: B018 - resolving the transport is the check
    except (KeyError, ImportError) as exc:
        reason = exc.args[0] if exc.args else exc
        raise ConfigurationError(
            f"broker_url={url!r} (CELERY_BROKER_URL or the configuration module): {reason}; "
            "expected redis://, rediss://, sentinel:// or amqp:// (pyamqp://) for RabbitMQ"
        ) from None


def _connect_broker(app: Celery) -> None:
    # One try; a connect that hangs ends after the broker's connection timeout (whole seconds).
    timeout = max(1, round(float(app.conf.broker_connection_timeout or 4.0)))
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=0, timeout=timeout)


async def problems(app: Celery, backend: Redis) -> list[str]:
    """What keeps the gateway from serving now: one line for the broker, one for the backend."""
    broker_url = sanitized_url(str(app.conf.broker_url))
    backend_url = sanitized_url(str(app.conf.result_backend))
    checks: list[tuple[str, Awaitable[object]]] = [
        (f"broker {broker_url}", asyncio.to_thread(_connect_broker, app)),
        (f"result backend {backend_url}", backend.ping()),
    ]
    outcomes = await asyncio.gather(*(check for _, check in checks), return_exceptions=True)
    return [
        f"{what}: {_one_line(outcome)}"
        for (what, _), outcome in zip(checks, outcomes, strict=True)
        if isinstance(outcome, Exception)
    ]


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
