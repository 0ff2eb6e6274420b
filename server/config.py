"""The gateway's settings, read once from the environment into a frozen dataclass."""

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskgate.worker.config import CelerySettings
from taskgate.worker.logs import log_format
from taskgate.worker.tracing import tracing_exporters


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


def _float(env: Mapping[str, str], name: str, default: float, *, zero_ok: bool = False) -> float:
    """A plain number (durations: seconds, as in `2.5`); never nan, inf or negative."""
    raw = env.get(name)
    if not raw:
        return default
    expected = "a number at least 0" if zero_ok else "a positive number"
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; expected {expected}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise SettingsError(f"{name}={raw!r}; expected {expected}")
    return value


def _listen(env: Mapping[str, str], name: str, default: str) -> str:
    """`host:port` (IPv6 hosts in brackets); gRPC would read a bare host as port 443."""
    raw = env.get(name) or default
    host, colon, port = raw.rpartition(":")
    if not colon or not host or host.endswith(":") or not port.isdigit() or int(port) > 65535:
        raise SettingsError(
            f"{name}={raw!r}; expected host:port, as in 127.0.0.1:50051 or [::]:50051 "
            "(port 0 picks a free one)"
        )
    return raw


def _patterns(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    raw = env.get(name) or default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    value = _float(env, name, default)
    if value != int(value):
        raise SettingsError(f"{name}={env.get(name)!r}; expected a whole number")
    return int(value)


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise SettingsError(f"{name}={raw!r} is not a file; expected the path of a readable file")
    return path


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(env: Mapping[str, str]) -> str:
    """`TASKGATE_LOG_LEVEL` (any case), INFO when unset; read before logging is set up."""
    raw = env.get("TASKGATE_LOG_LEVEL") or "INFO"
    if raw.upper() not in LOG_LEVELS:
        raise SettingsError(f"TASKGATE_LOG_LEVEL={raw!r}; expected one of {', '.join(LOG_LEVELS)}")
    return raw.upper()


@dataclass(frozen=True)
class LogSettings:
    """How the gateway logs; read before anything else, so that every line has its format."""

    level: str = "INFO"
    """`TASKGATE_LOG_LEVEL`: see `log_level`."""

    json: bool = False
    """`TASKGATE_LOG_FORMAT=json`: one JSON object a line instead of plain text."""

    access: bool = True
    """`TASKGATE_ACCESS_LOG`: `off` silences the one line per call (logger taskgate.access)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "LogSettings":
        """Read the log settings; a bad value raises before logging is set up."""
        return cls(
            level=log_level(env),
            json=log_format(env) == "json",
            access=_switch(env, "TASKGATE_ACCESS_LOG", True),
        )


@dataclass(frozen=True)
class SecuritySettings:
    """Who may call, over what, and how much; see the README's Security section."""

    tokens_file: Path | None = None
    """`TASKGATE_TOKENS_FILE`: bearer-token digests and rights; unset means no authentication."""

    tls_cert: Path | None = None
    """`TASKGATE_TLS_CERT`: the server certificate chain (PEM); with the key, turns TLS on."""

    tls_key: Path | None = None
    """`TASKGATE_TLS_KEY`: the server's private key (PEM)."""

    tls_client_ca: Path | None = None
    """`TASKGATE_TLS_CLIENT_CA`: CA certificates (PEM); set, every client must present a
    certificate they signed (mutual TLS)."""

    max_message_bytes: int = 4 * 1024 * 1024
    """`TASKGATE_MAX_MESSAGE_BYTES`: the largest request accepted (RESOURCE_EXHAUSTED above)."""

    max_concurrent_calls: int = 10_000
    """`TASKGATE_MAX_CONCURRENT_CALLS`: calls in progress at once, waiting ones included."""

    rate_per_second: float = 0.0
    """`TASKGATE_RATE_LIMIT`: calls a second allowed to each caller; 0 means no limit."""

    rate_burst: float = 0.0
    """`TASKGATE_RATE_BURST`: calls a caller may make at once above its rate (default: the rate)."""

    # --- hostile callers: connections, per-caller concurrency, streams (issue 11) ---

    max_calls_per_caller: int = 0
    """`TASKGATE_MAX_CALLS_PER_CALLER`: calls in progress at once for one caller (a token;
    the peer's address without authentication), so that one cannot hold every slot;
    0 means half of TASKGATE_MAX_CONCURRENT_CALLS."""

    max_connections: int = 0
    """`TASKGATE_MAX_CONNECTIONS`: open client connections; 0 means the open-file limit
    less a reserve for Redis, the broker and logs."""

    handshake_timeout_seconds: float = 10.0
    """`TASKGATE_HANDSHAKE_TIMEOUT`: how long a new connection may take to finish TLS and
    send its HTTP/2 settings."""

    connection_idle_seconds: float = 300.0
    """`TASKGATE_CONNECTION_IDLE`: a connection without calls for this long is closed."""

    connection_max_age_seconds: float = 1800.0
    """`TASKGATE_CONNECTION_MAX_AGE`: connections are asked to reconnect after this long,
    so that clients rebalance over the replicas behind an L4 balancer."""

    connection_age_grace_seconds: float = 0.0
    """`TASKGATE_CONNECTION_AGE_GRACE`: how long calls may finish on a connection past its
    age; 0 means TASKGATE_MAX_WAIT plus 30 s, so no wait is cut off."""

    keepalive_seconds: float = 60.0
    """`TASKGATE_KEEPALIVE`: the gateway pings a connection silent this long, and drops it
    when no answer comes within 20 s: callers that vanished free their calls."""

    min_client_ping_seconds: float = 5.0
    """`TASKGATE_MIN_CLIENT_PING`: the shortest interval between a client's keepalive
    pings that is tolerated (meshes ping every 10-30 s)."""

    stream_write_timeout_seconds: float = 30.0
    """`TASKGATE_STREAM_WRITE_TIMEOUT`: a WatchStatus stream whose client takes no message
    for this long is ended."""

    max_concurrent_reads: int = 32
    """`TASKGATE_MAX_CONCURRENT_READS`: requests received at once; the others wait, unread,
    so that a flood holds at most this many times TASKGATE_MAX_MESSAGE_BYTES."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SecuritySettings":
        """Read the security settings; a certificate without its key is an error."""
        settings = cls(
            tokens_file=_path(env, "TASKGATE_TOKENS_FILE"),
            tls_cert=_path(env, "TASKGATE_TLS_CERT"),
            tls_key=_path(env, "TASKGATE_TLS_KEY"),
            tls_client_ca=_path(env, "TASKGATE_TLS_CLIENT_CA"),
            max_message_bytes=_whole(env, "TASKGATE_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            max_concurrent_calls=_whole(
                env, "TASKGATE_MAX_CONCURRENT_CALLS", cls.max_concurrent_calls
            ),
            rate_per_second=_float(env, "TASKGATE_RATE_LIMIT", 0.0, zero_ok=True),
            rate_burst=_float(env, "TASKGATE_RATE_BURST", 0.0, zero_ok=True),
            **_hostile_caller_settings(env),
        )
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise SettingsError("TASKGATE_TLS_CERT and TASKGATE_TLS_KEY go together")
        if settings.tls_client_ca is not None and settings.tls_cert is None:
            raise SettingsError("TASKGATE_TLS_CLIENT_CA needs TASKGATE_TLS_CERT and _KEY")
        return settings


@dataclass(frozen=True)
class ObservabilitySettings:
    """Readiness checks and Prometheus metrics; see the README's Operating taskgate section."""

    metrics_listen: str | None = "127.0.0.1:9464"
    """`TASKGATE_METRICS_LISTEN`: where `/metrics` is served, `host:port`; empty turns it off."""

    readiness_interval_seconds: float = 2.0
    """`TASKGATE_READINESS_INTERVAL`: how often the broker and the result backend are asked."""

    readiness_failures: int = 3
    """`TASKGATE_READINESS_FAILURES`: failed checks in a row that turn readiness NOT_SERVING."""

    readiness_successes: int = 2
    """`TASKGATE_READINESS_SUCCESSES`: answered checks in a row that turn it SERVING again."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ObservabilitySettings":
        """Read the settings; TASKGATE_METRICS_LISTEN set but empty means no metrics."""
        metrics = env.get("TASKGATE_METRICS_LISTEN")
        return cls(
            metrics_listen=None
            if metrics == ""
            else _listen(env, "TASKGATE_METRICS_LISTEN", "127.0.0.1:9464"),
            readiness_interval_seconds=_float(env, "TASKGATE_READINESS_INTERVAL", 2.0),
            readiness_failures=_whole(env, "TASKGATE_READINESS_FAILURES", 3),
            readiness_successes=_whole(env, "TASKGATE_READINESS_SUCCESSES", 2),
        )


@dataclass(frozen=True)
class ReclaimSettings:
    """The reclaimer of messages lost between the Redis broker and a worker
    (server/publish/reclaim.py); only for the own publish path."""

    enabled: bool = True
    """`TASKGATE_RECLAIM`: `off` keeps no copies and gives nothing back. It relies on
    taskgate's workers' run claims: turn it off for a fleet of stock Celery workers, whose
    tasks that leave no trace (`ignore_result`, or acknowledged before they run and not
    tracked as started) would run again."""

    interval_seconds: float = 3.0
    """`TASKGATE_RECLAIM_INTERVAL`: how often the copies are looked at."""

    grace_seconds: float = 10.0
    """`TASKGATE_RECLAIM_GRACE`: how old a message must be before it is looked at; a lost
    one is queued again after about the grace plus two intervals."""

    batch: int = 200
    """`TASKGATE_RECLAIM_BATCH`: the most copies one sweep looks at."""

    @property
    def lock_seconds(self) -> int:
        """How long one gateway holds the right to push a task again: a few sweeps."""
        return max(1, round(self.grace_seconds + 2 * self.interval_seconds))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ReclaimSettings":
        """Read the reclaimer's settings."""
        return cls(
            enabled=_switch(env, "TASKGATE_RECLAIM", True),
            interval_seconds=_float(env, "TASKGATE_RECLAIM_INTERVAL", cls.interval_seconds),
            grace_seconds=_float(env, "TASKGATE_RECLAIM_GRACE", cls.grace_seconds),
            batch=_whole(env, "TASKGATE_RECLAIM_BATCH", cls.batch),
        )


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs to start; see the README for each variable."""

    listen: str = "127.0.0.1:50051"
    """`TASKGATE_LISTEN`: the gRPC address, `host:port`; port 0 picks a free one."""

    celery: CelerySettings = field(default_factory=CelerySettings)
    """Broker, result backend and configuration module, shared with the workers."""

    task_patterns: tuple[str, ...] = ("tasks.*",)
    """`TASKGATE_TASKS`: comma-separated shell patterns of submittable task names."""

    max_wait_seconds: float = 300.0
    """`TASKGATE_MAX_WAIT`: the longest GetResult `wait` honoured, in seconds."""

    publish_threads: int = 10
    """`TASKGATE_PUBLISH_THREADS`: threads for Celery's blocking publish; match
    Celery's `broker_pool_limit` (10) so no thread waits for a connection."""

    workers_refresh_seconds: float = 30.0
    """`TASKGATE_WORKERS_REFRESH`: how often to ask workers which tasks they serve."""

    idempotency_retention_seconds: float | None = None
    """`TASKGATE_IDEMPOTENCY_RETENTION`: how long an idempotency key is remembered, in
    seconds; unset means as long as results are kept (`result_expires`), and it may
    not be shorter than that."""

    max_start_delay_seconds: float | None = None
    """`TASKGATE_MAX_START_DELAY`: the latest start (countdown or eta) accepted, in
    seconds from now; unset means no limit. Set it to the Redis broker's
    visibility_timeout when workers other than taskgate's consume the queues."""

    grace_seconds: float = 10.0
    """`TASKGATE_GRACE`: how long calls in flight may finish after SIGTERM."""

    security: SecuritySettings = field(default_factory=SecuritySettings)
    """Authentication, TLS and limits."""

    require_registered: bool = False
    """`TASKGATE_REQUIRE_REGISTERED`: `on` refuses (NOT_FOUND) a catalog name that no
    live worker registers, instead of queueing it for a worker that may come later."""

    tracebacks: bool = True
    """`TASKGATE_TRACEBACKS`: `off` withholds the workers' tracebacks from callers."""

    trace_exporters: tuple[str, ...] | None = None
    """`TASKGATE_TRACING=otel`: the gateway's own spans go to these OpenTelemetry
    exporters (`OTEL_TRACES_EXPORTER`); None (the default) passes `traceparent` on only."""

    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    """Readiness checks and metrics."""

    processes: int = 1
    """`TASKGATE_PROCESSES`: gateway processes serving the one port (SO_REUSEPORT)."""

    reclaim: ReclaimSettings = field(default_factory=ReclaimSettings)
    """Giving back messages popped by a worker that never received them."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "GatewaySettings":
        """Read the settings from environment variables, with the defaults above."""
        return cls(
            listen=_listen(env, "TASKGATE_LISTEN", cls.listen),
            celery=CelerySettings.from_env(env),
            task_patterns=_patterns(env, "TASKGATE_TASKS", "tasks.*"),
            max_wait_seconds=_float(env, "TASKGATE_MAX_WAIT", 300.0),
            publish_threads=_whole(env, "TASKGATE_PUBLISH_THREADS", 10),
            workers_refresh_seconds=_float(env, "TASKGATE_WORKERS_REFRESH", 30.0),
            idempotency_retention_seconds=_float(env, "TASKGATE_IDEMPOTENCY_RETENTION", 0.0)
            or None,
            max_start_delay_seconds=_float(env, "TASKGATE_MAX_START_DELAY", 0.0, zero_ok=True)
            or None,
            grace_seconds=_float(env, "TASKGATE_GRACE", 10.0),
            security=SecuritySettings.from_env(env),
            require_registered=_switch(env, "TASKGATE_REQUIRE_REGISTERED", False),
            tracebacks=_switch(env, "TASKGATE_TRACEBACKS", True),
            trace_exporters=tracing_exporters(env),
            observability=ObservabilitySettings.from_env(env),
            processes=_whole(env, "TASKGATE_PROCESSES", 1),
            reclaim=ReclaimSettings.from_env(env),
        )


_SWITCH = {"on": True, "off": False}


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if not raw:
        return default
    if raw.strip().lower() not in _SWITCH:
        raise SettingsError(f"{name}={raw!r} must be on or off")
    return _SWITCH[raw.strip().lower()]


def _hostile_caller_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The SecuritySettings fields that bound connections, callers and streams."""
    defaults = SecuritySettings
    return {
        "max_calls_per_caller": int(_float(env, "TASKGATE_MAX_CALLS_PER_CALLER", 0, zero_ok=True)),
        "max_connections": int(_float(env, "TASKGATE_MAX_CONNECTIONS", 0, zero_ok=True)),
        "max_concurrent_reads": _whole(
            env, "TASKGATE_MAX_CONCURRENT_READS", defaults.max_concurrent_reads
        ),
        **{
            field_name: _float(env, variable, getattr(defaults, field_name), zero_ok=zero_ok)
            for field_name, variable, zero_ok in (
                ("handshake_timeout_seconds", "TASKGATE_HANDSHAKE_TIMEOUT", False),
                ("connection_idle_seconds", "TASKGATE_CONNECTION_IDLE", False),
                ("connection_max_age_seconds", "TASKGATE_CONNECTION_MAX_AGE", False),
                ("connection_age_grace_seconds", "TASKGATE_CONNECTION_AGE_GRACE", True),
                ("keepalive_seconds", "TASKGATE_KEEPALIVE", False),
                ("min_client_ping_seconds", "TASKGATE_MIN_CLIENT_PING", False),
                ("stream_write_timeout_seconds", "TASKGATE_STREAM_WRITE_TIMEOUT", False),
            )
        },
    }
