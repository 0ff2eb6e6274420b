"""Loads the tokens file again on SIGHUP, or when the file changes, without a restart.

The new tokens replace the old ones at once (TokenAuthenticator.reload); a file that
cannot be used is logged, and the tokens in force stay as they were.
"""

import asyncio
import logging
import os
import signal
from pathlib import Path

from taskgate.server import background
from taskgate.server.auth import TokenAuthenticator, TokensFileError

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""How often the tokens file is looked at (one stat) for a change."""


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is written or replaced; None while it is missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class TokenReloader:
    """Reloads `authenticator` from `path` on SIGHUP and when the file changes."""

    def __init__(self, authenticator: TokenAuthenticator, path: Path) -> None:
        self._authenticator = authenticator
        self._path = path
        self._seen = _signature(path)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Handle SIGHUP and watch the file, on the running event loop."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        self._task = asyncio.create_task(self._watch(), name="tokens-file-watch")

    def reload(self, why: str) -> None:
        """Load the file now; on error, log it and keep the tokens in force."""
        self._seen = _signature(self._path)
        try:
            count = self._authenticator.reload()
        except TokensFileError as exc:
            logger.error("tokens not reloaded (%s): %s; the tokens in force stay", why, exc)
            return
        logger.info("tokens reloaded (%s) from %s: %d tokens in force", why, self._path, count)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if _signature(self._path) != self._seen:
                self.reload("the file changed")

    async def close(self) -> None:
        """Stop watching and restore SIGHUP's default."""
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await background.stop(self._task)
