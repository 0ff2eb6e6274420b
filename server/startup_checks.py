"""What the gateway checks before it serves: the broker and the result backend.

A broker URL no transport can serve (`redsi://`) can never work: the gateway
refuses to start. A broker or backend that does not answer, or refuses (wrong
RabbitMQ credentials, an unknown vhost), may come back or be fixed without
touching the gateway: it starts degraded, says so in the log, and reports
NOT_SERVING for the TaskService until both answer (server/observability/readiness.py
asks them for the gateway's whole life).
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable
from typing import Any

from celery import Celery
from kombu import Connection
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


class BrokerNotAnswering(Exception):
    """A check of the broker is still waiting for its answer."""


class BrokerProbe:
    """One broker connection, kept from check to check: a check is a round trip on it.
    A new connection every check (2 s) put two lines in RabbitMQ's log each time; a
    failed check drops the connection, and the next one connects anew. Each check runs
    in a worker thread; one that outlives its timeout (a frozen broker) still holds the
    connection, and a check meanwhile fails at once rather than share it (an AMQP
    connection is not thread-safe)."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._connection: Connection | None = None
        self._in_use = threading.Lock()

    def check(self) -> None:
        """Answer, or raise what the broker did."""
        if not self._in_use.acquire(blocking=False):
            raise BrokerNotAnswering("the previous check of the broker has not answered yet")
        try:
            if self._connection is None:
                self._connection = self._connect()
            else:
                _round_trip(self._connection)
        except Exception:
            self._drop()
            raise
        finally:
            self._in_use.release()

    def _connect(self) -> Connection:
        # One try; a connect that hangs ends after the connection timeout (whole seconds).
        timeout = max(1, round(float(self._app.conf.broker_connection_timeout or 4.0)))
        # A kept AMQP connection must not wait for ever on a broker that went silent.
        socket_timeouts = {"read_timeout": timeout, "write_timeout": timeout}
        connection: Connection = self._app.connection_for_write(transport_options=socket_timeouts)
        try:
            connection.ensure_connection(max_retries=0, timeout=timeout)
        except Exception:
            connection.release()
            raise
        return connection

    def close(self) -> None:
        """Let go of the connection; one a check still holds (a frozen broker) goes with
        the process, so that a stopping gateway waits for no broker."""
        if self._in_use.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._in_use.release()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # it is already broken, or the broker gone
                connection.release()


def _round_trip(connection: Connection) -> None:
    """One exchange with the broker on `connection`: a PING on the Redis client of its
    default channel (closing a Redis channel would close its connection pool), a channel
    opened and closed on RabbitMQ."""
    if connection.transport.driver_type == "redis":
        kept: Any = connection.default_channel  # kombu types channels as StdChannel
        kept.client.ping()
        return
    opened: Any = connection.channel()
    opened.close()


async def problems(probe: BrokerProbe, app: Celery, backend: Redis) -> list[str]:
    """What keeps the gateway from serving now: one line for the broker, one for the backend."""
    broker_url = sanitized_url(str(app.conf.broker_url))
    backend_url = sanitized_url(str(app.conf.result_backend))
    checks: list[tuple[str, Awaitable[object]]] = [
        (f"broker {broker_url}", asyncio.to_thread(probe.check)),
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
