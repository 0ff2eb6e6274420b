"""How one wait rides out a result backend that goes away for a while.

A wait that loses its subscription, or fails to read its task's state, does
not end: it goes on waiting, and reads the state again once the shared
subscription is back (the watcher says None) or, with the subscription up,
every RETRY_SECONDS. Only a wait whose state is still unknown when it runs
out ends UNAVAILABLE: a state read before the outage may be stale, so it is
never passed off as the current one.
"""

import asyncio

from taskgate.server.errors import Unavailable
from taskgate.server.watcher import ResultWatcher, Watch

RETRY_SECONDS = 0.5
"""How often a wait whose last read failed reads again while the subscription is up."""

STREAM_GRACE_SECONDS = 15.0
"""How long a wait with no end (WatchStatus) rides out an outage before UNAVAILABLE."""


class Outage:
    """Whether a wait still knows its task's state, and when it should read it again."""

    def __init__(self, watcher: ResultWatcher, until: float | None) -> None:
        self._watcher = watcher
        self._until = until
        self._loop = asyncio.get_running_loop()
        self.since: float | None = None
        """Event-loop time since which the state may be unknown; None while it is known."""

    def begin(self) -> None:
        """The subscription was lost or a read failed: states may be missed from now."""
        if self.since is None:
            self.since = self._loop.time()

    def end(self) -> None:
        """The state was read, or published to us: it is known again."""
        self.since = None

    def raise_if_unknown(self) -> None:
        """At the end of the wait: Unavailable if the state is not known."""
        if self.since is not None:
            raise Unavailable("the result backend was unreachable until the wait ran out")

    async def changes(self, watch: Watch) -> list[bytes | None]:
        """The watch's next changes, or [None] (read again) when a retry is due.

        TimeoutError when the wait runs out; Unavailable when a wait with no end
        has been in an outage for longer than STREAM_GRACE_SECONDS.
        """
        while True:
            retry_at = None if self.since is None else self._loop.time() + RETRY_SECONDS
            retrying = retry_at is not None and (self._until is None or retry_at < self._until)
            try:
                async with asyncio.timeout_at(retry_at if retrying else self._until):
                    return await watch.changes()
            except TimeoutError:
                if not retrying:
                    raise
            self._refuse_long_outage()
            if self._watcher.connected:
                return [None]

    def _refuse_long_outage(self) -> None:
        if self._until is not None or self.since is None:
            return  # a wait with an end rides out an outage until its end
        if self._loop.time() - self.since > STREAM_GRACE_SECONDS:
            raise Unavailable("the result backend has been unreachable for too long")
