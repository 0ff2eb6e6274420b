"""A worker outlives the loss of its Redis broker while it holds a message.

kombu 5.7's Redis channel, closed while its BRPOP waits on a connection the
broker dropped, raises from that read before the rest of its close runs. Celery
swallows the error, closes the transport, and closes the channel again: that
second close gives the held message back through a transport whose client is
gone, raises AttributeError, and Celery ends the whole worker ("Unrecoverable
error"). Here a lost BRPOP read during a close counts as an empty read, so the
close completes the first time and the consumer reconnects as it should.
"""

import functools
from collections.abc import Callable
from typing import Any

from kombu.transport import redis
from kombu.transport.virtual import Empty

_INSTALLED = "_taskgate_closes_despite_a_lost_read"


def _closing_read_is_empty(read: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(read)
    def brpop_read(self: Any, **options: Any) -> Any:
        try:
            return read(self, **options)
        except self.connection_errors:
            if not self._closing:
                raise
            raise Empty() from None

    return brpop_read


def install() -> None:
    """Patch kombu's Redis channel (and so the Sentinel one) once per process."""
    if getattr(redis.Channel, _INSTALLED, False):
        return
    read = getattr(redis.Channel, "_brpop_read")  # noqa: B009 - not in kombu's type stubs
    setattr(redis.Channel, "_brpop_read", _closing_read_is_empty(read))  # noqa: B010
    setattr(redis.Channel, _INSTALLED, True)
