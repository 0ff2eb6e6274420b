"""`python -m server`: run the gateway with settings from the environment."""

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from server.app import serve
from server.config import GatewaySettings, SettingsError
from worker.factory import ConfigurationError


def main() -> None:
    """Configure logging, read the settings and serve until stopped."""
    logging.basicConfig(
        level=os.environ.get("TASKGATE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = GatewaySettings.from_env()
        runner = _event_loop_runner()
        runner(serve(settings))
    except (SettingsError, ConfigurationError) as exc:
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
