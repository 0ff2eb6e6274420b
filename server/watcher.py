"""One Redis subscription shared by every call that waits for a task.

The Redis result backend PUBLISHes each stored state on the task's own key.
A waiting call subscribes to that channel through this watcher; the watcher
holds one pub/sub connection for the whole gateway, subscribes a channel
while anyone watches it and unsubscribes when the last watcher leaves.

Leaving never waits for Redis: the channels left in one pass of the event
loop go out in one UNSUBSCRIBE, so a thousand waits that end together cost
one round trip, not a thousand in a row. When the connection is lost every
watcher hears LOST, and once redis-py has subscribed again, None ("read the
state again"): a wait can ride out a short outage.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from taskgate.server.errors import Unavailable, redis_unavailable

logger = logging.getLogger(__name__)

_POLL_SECONDS = 1.0  # how long one read waits before the loop checks in again
_RETRY_SECONDS = 0.5  # pause between reconnection attempts while Redis is down
_MAX_PENDING = 256  # states queued for one slow watcher before it must re-read
_UNSUBSCRIBE_CHUNK = 1000  # channels named in one UNSUBSCRIBE command

LOST = b""
"""Queued for every watcher when the subscription is lost: states may be missed
until a None (subscribed again, read the state) follows. Celery never publishes
an empty payload, so it cannot be confused with a state."""


def _confirmed() -> "asyncio.Future[None]":
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class Watch:
    """What one waiting call sees: wake-ups, with the payloads published since the last."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        # None in here means "something may have been missed: read the state again";
        # LOST, "the subscription is down: nothing arrives until a None".
        self._payloads: deque[bytes | None] = deque(maxlen=_MAX_PENDING)

    def notify(self, payload: bytes | None) -> None:
        """Queue a published state (None after a reconnect, LOST on a loss) and wake."""
        if len(self._payloads) == self._payloads.maxlen:
            self._payloads.append(None)  # the oldest falls out: make the reader re-read
        self._payloads.append(payload)
        self._changed.set()

    async def changes(self) -> list[bytes | None]:
        """Wait for the next notification; return everything queued since the last call."""
        await self._changed.wait()
        self._changed.clear()
        payloads = list(self._payloads)
        self._payloads.clear()
        return payloads


class ResultWatcher:
    """Fans the published task states out to the calls waiting for them."""

    def __init__(self, redis: Redis, confirm_timeout: float = 5.0) -> None:
        self._pubsub = redis.pubsub()
        self._confirm_timeout = confirm_timeout
        self._watches: dict[bytes, set[Watch]] = {}
        self._subscribed: dict[bytes, asyncio.Future[None]] = {}
        self._unconfirmed: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._leaving: set[bytes] = set()  # nobody watches them: unsubscribe soon
        self._reader: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.connected = True
        """False from a lost subscription until Redis confirms one again."""

    @property
    def channels(self) -> int:
        """How many channels are subscribed now; zero when nobody waits."""
        return len(self._watches)

    @contextlib.asynccontextmanager
    async def watch(self, channel: bytes) -> AsyncIterator[Watch]:
        """Subscribe to `channel` for the duration of the block.

        On entry the subscription is confirmed by Redis, so a state stored
        after entry is never missed; read the current state then.
        """
        watch = Watch()
        watches = self._watches.setdefault(channel, set())
        watches.add(watch)
        try:
            if len(watches) == 1:
                await self._subscribe(channel)
            async with asyncio.timeout(self._confirm_timeout):
                await asyncio.shield(self._subscribed[channel])
            yield watch
        except TimeoutError:
            raise Unavailable("the result backend did not confirm a subscription") from None
        finally:
            watches.discard(watch)
            if not watches and self._watches.get(channel) is watches:
                self._leave(channel)

    async def _subscribe(self, channel: bytes) -> None:
        if channel in self._leaving:  # left in this very pass: still subscribed
            self._leaving.discard(channel)
            self._subscribed[channel] = _confirmed()
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._subscribed[channel] = confirmed
        self._unconfirmed.setdefault(channel, deque()).append(confirmed)
        with redis_unavailable("the result backend"):
            await self._pubsub.subscribe(channel)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="result-watcher")

    def _leave(self, channel: bytes) -> None:
        """Forget `channel` now; unsubscribe it with the others left in this pass."""
        self._watches.pop(channel, None)
        self._subscribed.pop(channel, None)
        self._leaving.add(channel)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._unsubscribe_left(), name="unsubscriber")

    async def _unsubscribe_left(self) -> None:
        await asyncio.sleep(0)  # let the other waits ending in this pass leave too
        while self._leaving:
            channels = list(self._leaving)[:_UNSUBSCRIBE_CHUNK]
            self._leaving.difference_update(channels)
            try:
                await self._pubsub.unsubscribe(*channels)
            except Exception as exc:  # redis-py raises odd errors (AttributeError) on a dead socket
                # redis-py subscribes them again on reconnect; _dispatch then leaves them.
                logger.info("could not unsubscribe %d channels: %s", len(channels), exc)
                return

    async def _read_forever(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=_POLL_SECONDS)
            except Exception as exc:  # any failure: the reader must live on, or waits go deaf
                if self.connected:
                    logger.warning("result subscription lost, reconnecting: %s", exc)
                    self.connected = False
                    self._notify_all(LOST)
                self._fail_unconfirmed(exc)
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            self._reconnected()
            if message is not None:
                self._dispatch(message["type"], message["channel"], message["data"])

    def _dispatch(self, kind: str, channel: bytes, data: bytes) -> None:
        if kind == "message":
            for watch in self._watches.get(channel, ()):
                watch.notify(data)
        elif kind == "subscribe":
            pending = self._unconfirmed.get(channel)
            if pending:
                future = pending.popleft()
                if not pending:
                    del self._unconfirmed[channel]
                if not future.done():
                    future.set_result(None)
                return
            # redis-py re-subscribed after a reconnect: states may have been missed.
            if channel not in self._watches:  # left while the connection was down
                self._leave(channel)
                return
            self._subscribed[channel] = _confirmed()
            for watch in self._watches[channel]:
                watch.notify(None)

    def _reconnected(self) -> None:
        if not self.connected:
            logger.warning("result subscription restored")
            self.connected = True

    def _fail_unconfirmed(self, exc: Exception) -> None:
        error = Unavailable(f"the result backend is unavailable: {exc}")
        for pending in self._unconfirmed.values():
            for future in pending:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved here: no "never retrieved" warning
        self._unconfirmed.clear()

    def _notify_all(self, payload: bytes | None) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.notify(payload)

    async def close(self) -> None:
        """Stop reading and close the pub/sub connection."""
        for task in (self._reader, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
