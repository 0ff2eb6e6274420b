"""The gateway's settings, read once from the environment into a frozen dataclass."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.config import CelerySettings


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


def _patterns(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    raw = env.get(name) or default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


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

    grace_seconds: float = 10.0
    """`TASKGATE_GRACE`: how long calls in flight may finish after SIGTERM."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "GatewaySettings":
        """Read the settings from environment variables, with the defaults above."""
        threads = _float(env, "TASKGATE_PUBLISH_THREADS", 10)
        if threads != int(threads):
            raise SettingsError("TASKGATE_PUBLISH_THREADS must be a whole number")
        return cls(
            listen=env.get("TASKGATE_LISTEN") or cls.listen,
            celery=CelerySettings.from_env(env),
            task_patterns=_patterns(env, "TASKGATE_TASKS", "tasks.*"),
            max_wait_seconds=_float(env, "TASKGATE_MAX_WAIT", 300.0),
            publish_threads=int(threads),
            workers_refresh_seconds=_float(env, "TASKGATE_WORKERS_REFRESH", 30.0),
            idempotency_retention_seconds=(
                _float(env, "TASKGATE_IDEMPOTENCY_RETENTION", 0.0)
                if env.get("TASKGATE_IDEMPOTENCY_RETENTION")
                else None
            ),
            grace_seconds=_float(env, "TASKGATE_GRACE", 10.0),
        )
