"""What every gateway process does first: logging, the event loop, one-line errors.

Shared by `python -m taskgate.server` and each process of a group (server/process_group.py),
which starts in a fresh interpreter and must set itself up the same way.
"""

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from taskgate.server.auth import TokensFileError
from taskgate.server.config import LogSettings
from taskgate.server.env import SettingsError
from taskgate.server.observability import logs as observability_logs
from taskgate.worker.factory import ConfigurationError


@contextmanager
def configuration_errors_in_one_line() -> Iterator[None]:
    """A configuration error ends the process with one line that names the setting
    (exit status 1), never a traceback."""
    try:
        yield
    except (SettingsError, ConfigurationError, TokensFileError) as exc:
        sys.exit(f"taskgate: configuration error: {exc}")


def configure_logging() -> None:
    """The gateway's logging as the environment asks (TASKGATE_LOG_LEVEL, _LOG_FORMAT...)."""
    observability_logs.configure_logging(LogSettings.from_env(os.environ))


def event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop where it is installed: a faster event loop for the same code."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run
    return uvloop.run
