"""Log lines as JSON objects on request, one a line, for the gateway and the workers alike."""

import logging
from collections.abc import Mapping
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from taskgate.worker.factory import ConfigurationError

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_format(env: Mapping[str, str]) -> str:
    """`TASKGATE_LOG_FORMAT`: `text` (the default) or `json`, any case."""
    raw = env.get("TASKGATE_LOG_FORMAT") or "text"
    if raw.strip().lower() not in LOG_FORMATS:
        raise ConfigurationError(
            f"TASKGATE_LOG_FORMAT={raw!r}; expected one of {', '.join(LOG_FORMATS)}"
        )
    return raw.strip().lower()


def json_formatter() -> logging.Formatter:
    """time (ISO 8601, UTC), level, logger and message, then every `extra` field but
    Celery's `data`: it holds a task's arguments, which its text lines never show."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        reserved_attrs=[*RESERVED_ATTRS, "data"],
    )


def _use_json(logger: logging.Logger, **_: Any) -> None:
    for handler in logger.handlers:
        handler.setFormatter(json_formatter())


def install_json_logs() -> None:
    """Make the worker's own and its tasks' log handlers write JSON, once Celery made them."""
    after_setup_logger.connect(_use_json, weak=False)
    after_setup_task_logger.connect(_use_json, weak=False)
