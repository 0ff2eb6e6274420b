"""Celery settings shared by the gateway and the workers, read once from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EXAMPLE_TASK_MODULE = "taskgate.worker.tasks"


@dataclass(frozen=True)
class CelerySettings:
    """Where Celery's broker and results live, and which code the workers load."""

    broker_url: str | None = None
    """`CELERY_BROKER_URL`; unset means the configuration module's, then local Redis."""

    result_backend: str | None = None
    """`CELERY_RESULT_BACKEND`; unset means the configuration module's, then local Redis."""

    config_module: str | None = None
    """`CELERY_CONFIG_MODULE`: a `celeryconfig.py`-style module loaded into Celery."""

    task_modules: tuple[str, ...] = ()
    """`TASKGATE_TASK_MODULES`, comma-separated; empty means the bundled examples."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "CelerySettings":
        """Read the settings from environment variables; empty values count as unset."""
        modules = tuple(name.strip() for name in env.get("TASKGATE_TASK_MODULES", "").split(","))
        return cls(
            broker_url=env.get("CELERY_BROKER_URL") or None,
            result_backend=env.get("CELERY_RESULT_BACKEND") or None,
            config_module=env.get("CELERY_CONFIG_MODULE") or None,
            task_modules=tuple(name for name in modules if name),
        )
