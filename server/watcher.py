"""One Redis subscription shared by every call that waits for a task.

The Redis result backend PUBLISHes each stored state on the task's own key.
A waiting call subscribes to that channel through this watcher; the watcher
holds one pub/sub connection for the whole gateway, subscribes a channel
while anyone watches it and unsubscribes when the last watcher leaves.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from server.errors import Unavailable, redis_unavailable

logger = logging.getLogger(__name__)

_POLL_SECONDS = 1.0  # how long one read waits before the loop checks in again
_RETRY_SECONDS = 0.5  # pause between reconnection attempts while Redis is down
_MAX_PENDING = 256  # states queued for one slow watcher before it must re-read


def _confirmed() -> "asyncio.Future[None]":
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class Watch:
    """What one waiting call sees: wake-ups, with the payloads published since the last."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        # None in here means "something may have been missed: read the state again".
        self._payloads: deque[bytes | None] = deque(maxlen=_MAX_PENDING)

    def notify(self, payload: bytes | None) -> None:
        """Queue a published state (or None after a reconnect) and wake the watcher."""
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
        self._reader: asyncio.Task[None] | None = None

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
                await self._unsubscribe(channel)

    async def _subscribe(self, channel: bytes) -> None:
        confirmed = asyncio.get_running_loop().create_future()
        self._subscribed[channel] = confirmed
        self._unconfirmed.setdefault(channel, deque()).append(confirmed)
        with redis_unavailable("the result backend"):
            await self._pubsub.subscribe(channel)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="result-watcher")

    async def _unsubscribe(self, channel: bytes) -> None:
        del self._watches[channel]
        self._subscribed.pop(channel, None)
        try:
            await self._pubsub.unsubscribe(channel)
        except Exception as exc:  # redis-py raises odd errors (AttributeError) on a dead socket
            # Nothing is lost: after a reconnect, redis-py subscribes only what is still wanted.
            logger.info("could not unsubscribe %r: %s", channel, exc)

    async def _read_forever(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=_POLL_SECONDS)
            except Exception as exc:  # any failure: the reader must live on, or waits go deaf
                logger.warning("result subscription lost, reconnecting: %s", exc)
                self._fail_unconfirmed(exc)
                self._wake_all()
                await asyncio.sleep(_RETRY_SECONDS)
                continue
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
            if channel in self._watches:
                self._subscribed[channel] = _confirmed()
            for watch in self._watches.get(channel, ()):
                watch.notify(None)

    def _fail_unconfirmed(self, exc: Exception) -> None:
        error = Unavailable(f"the result backend is unavailable: {exc}")
        for pending in self._unconfirmed.values():
            for future in pending:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved here: no "never retrieved" warning
        self._unconfirmed.clear()

    def _wake_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.notify(None)

    async def close(self) -> None:
        """Stop reading and close the pub/sub connection."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
