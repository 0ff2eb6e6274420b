"""The gateway's settings, read once from the environment into a frozen dataclass."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from taskgate.server.env import address, log_level, number, patterns, switch, whole
from taskgate.server.security_config import SecuritySettings
from taskgate.worker.config import CelerySettings
from taskgate.worker.logs import log_format
from taskgate.worker.tracing import tracing_exporters


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
            access=switch(env, "TASKGATE_ACCESS_LOG", True),
        )


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
            else address(env, "TASKGATE_METRICS_LISTEN", "127.0.0.1:9464"),
            readiness_interval_seconds=number(env, "TASKGATE_READINESS_INTERVAL", 2.0),
            readiness_failures=whole(env, "TASKGATE_READINESS_FAILURES", 3),
            readiness_successes=whole(env, "TASKGATE_READINESS_SUCCESSES", 2),
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
            enabled=switch(env, "TASKGATE_RECLAIM", True),
            interval_seconds=number(env, "TASKGATE_RECLAIM_INTERVAL", cls.interval_seconds),
            grace_seconds=number(env, "TASKGATE_RECLAIM_GRACE", cls.grace_seconds),
            batch=whole(env, "TASKGATE_RECLAIM_BATCH", cls.batch),
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
            listen=address(env, "TASKGATE_LISTEN", cls.listen),
            celery=CelerySettings.from_env(env),
            task_patterns=patterns(env, "TASKGATE_TASKS", "tasks.*"),
            max_wait_seconds=number(env, "TASKGATE_MAX_WAIT", 300.0),
            publish_threads=whole(env, "TASKGATE_PUBLISH_THREADS", 10),
            workers_refresh_seconds=number(env, "TASKGATE_WORKERS_REFRESH", 30.0),
            idempotency_retention_seconds=number(env, "TASKGATE_IDEMPOTENCY_RETENTION", 0.0)
            or None,
            max_start_delay_seconds=number(env, "TASKGATE_MAX_START_DELAY", 0.0, zero_ok=True)
            or None,
            grace_seconds=number(env, "TASKGATE_GRACE", 10.0),
            security=SecuritySettings.from_env(env),
            require_registered=switch(env, "TASKGATE_REQUIRE_REGISTERED", False),
            tracebacks=switch(env, "TASKGATE_TRACEBACKS", True),
            trace_exporters=tracing_exporters(env),
            observability=ObservabilitySettings.from_env(env),
            processes=whole(env, "TASKGATE_PROCESSES", 1),
            reclaim=ReclaimSettings.from_env(env),
        )
