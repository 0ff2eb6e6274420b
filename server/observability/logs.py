"""The gateway's logging set-up: plain text or one JSON object a line, and the access log."""

import logging

from taskgate.server.config import LogSettings
from taskgate.worker.logs import TEXT_FORMAT, json_formatter

ACCESS_LOGGER = "taskgate.access"
"""One INFO line per call; `TASKGATE_ACCESS_LOG=off` raises this logger to WARNING."""


def configure_logging(settings: LogSettings) -> None:
    """Log to stderr at `settings.level`, in the format asked for."""
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter() if settings.json else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.level, handlers=[handler])
    if not settings.access:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
