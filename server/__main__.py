"""`python -m server`: run the gateway with settings from the environment."""

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from server.app import serve
from server.auth import TokensFileError
from server.config import GatewaySettings, LogSettings, SettingsError
from server.observability.logs import configure_logging
from worker.factory import ConfigurationError


def main() -> None:
    """Configure logging, read the settings and serve until stopped.

    A configuration error ends the process with one line that names the setting
    (exit status 1), never a traceback.
    """
    try:
        configure_logging(LogSettings.from_env(os.environ))
        settings = GatewaySettings.from_env()
        runner = _event_loop_runner()
        runner(serve(settings))
    except (SettingsError, ConfigurationError, TokensFileError) as exc:
        sys.exit(f"taskgate: configuration error: {exc}")


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop where it is installed: a faster event loop for the same code."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    main()
