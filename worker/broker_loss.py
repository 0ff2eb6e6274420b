"""A worker outlives the loss of its Redis broker, and a broker that refuses writes.

kombu 5.7's Redis channel, closed while its BRPOP waits on a connection the
broker dropped, raises from that read before the rest of its close runs. Celery
swallows the error, closes the transport, and closes the channel again: that
second close gives the held message back through a transport whose client is
gone, raises AttributeError, and Celery ends the whole worker ("Unrecoverable
error"). Here a lost BRPOP read during a close counts as an empty read, so the
close completes the first time and the consumer reconnects as it should.

A primary with fewer replicas in sync than its `min-replicas-to-write` answers
every write NOREPLICAS: the worker's BRPOP (a pop is a write), the lock of its
message restore, its result stores. redis-py raises a plain ResponseError for
it, which kombu and Celery do not retry: the worker ends. Here NOREPLICAS is a
connection error, as redis-py already makes LOADING (a Redis still loading its
data): the consumer reconnects with Celery's backoff and results are retried
until writes are allowed again.
"""

import functools
from collections.abc import Callable
from typing import Any

from kombu.transport import redis
from kombu.transport.virtual import Empty
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError

_INSTALLED = "_taskgate_survives_broker_loss"


class ReplicasNotInSync(RedisConnectionError):
    """NOREPLICAS: the primary refuses writes until enough replicas are in sync."""


def _survive_loss(read: Callable[..., Any]) -> Callable[..., Any]:
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
    """Patch kombu's Redis channel (and so the Sentinel one) and redis-py's error
    table, once per process."""
    if getattr(redis.Channel, _INSTALLED, False):
        return
    BaseParser.EXCEPTION_CLASSES["NOREPLICAS"] = ReplicasNotInSync
    read = getattr(redis.Channel, "_brpop_read")  # noqa: B009 - not in kombu's type stubs
    setattr(redis.Channel, "_brpop_read", _survive_loss(read))  # noqa: B010
    setattr(redis.Channel, _INSTALLED, True)
