"""What the gateway checks before it serves: the broker and the result backend.

A broker URL no transport can serve (`redsi://`) can never work: the gateway
refuses to start. A broker or backend that does not answer, or refuses (wrong
RabbitMQ credentials, an unknown vhost), may come back or be fixed without
touching the gateway: it starts degraded, says so in the log, reports
NOT_SERVING for the TaskService until both answer, and asks again meanwhile.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from celery import Celery
from redis.asyncio import Redis

from worker.factory import ConfigurationError, sanitized_url

logger = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0
"""How often a degraded gateway asks the broker and the backend again."""


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


class DegradedStart:
    """Asks the broker and backend again until both answer, then calls `recovered`."""

    def __init__(
        self, app: Celery, backend: Redis, recovered: Callable[[], Awaitable[None]]
    ) -> None:
        self._app = app
        self._backend = backend
        self._recovered = recovered
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        """True when both answer now; otherwise log the degraded start and keep asking."""
        found = await problems(self._app, self._backend)
        if not found:
            return True
        for problem in found:
            logger.error("degraded start: %s", problem)
        logger.error(
            "degraded start: TaskService NOT_SERVING until the broker and the result backend "
            "answer (asking every %gs); calls meanwhile answer UNAVAILABLE",
            RECHECK_SECONDS,
        )
        self._task = asyncio.create_task(self._until_recovered(), name="startup-recheck")
        return False

    async def _until_recovered(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                found = await problems(self._app, self._backend)
            except Exception:
                logger.exception("checking the broker and the result backend failed")
                continue
            if not found:
                logger.info("the broker and the result backend answer: TaskService SERVING")
                await self._recovered()
                return
            logger.warning("still degraded: %s", "; ".join(found))

    async def close(self) -> None:
        """Stop asking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
