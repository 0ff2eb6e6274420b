"""Keeps the Redis broker from giving a live worker's messages to another worker.

kombu's Redis transport emulates acknowledgements (`QoS.append`): a delivered
message waits in the `unacked` hash, with the time of delivery as its score in the
`unacked_index` sorted set, and every consumer's sweep (`QoS.restore_visible`) puts
back on its queue any message whose score is older than `visibility_timeout`. That
is how the messages of a worker that died come back; but it also starts again a
task that merely runs longer than the timeout, on another worker, while the first
run goes on.

The heartbeat runs in the worker's main process, where Celery tracks the requests
it holds, on a thread with its own broker connection (the consumer's belongs to the
event loop). Every third of `visibility_timeout` it sets the score of each message
the worker still holds (running, waiting for a pool process, or waiting for its
ETA) to the current time. A live worker's messages are then never overdue, and a
dead worker's come back within about `visibility_timeout` plus the sweep interval.
"""

import logging
import threading
import time
from typing import Any

from celery import Celery, bootsteps
from celery.worker import state
from kombu.transport import redis

from taskgate.worker.visibility import redis_visibility_timeout, warn_of_time_limits_beyond

logger = logging.getLogger(__name__)

# The heartbeat refreshes this many times within one visibility timeout, so that a
# beat or two may be late (a slow broker) before a message looks overdue.
BEATS_PER_TIMEOUT = 3
# How long the worker's shutdown waits for a beat in progress (socket timeouts included).
STOP_SECONDS = 10.0


def held_delivery_tags() -> list[str]:
    """The delivery tags of the messages behind the requests this worker holds.

    `state.requests` maps task ids to every request reserved, scheduled for an ETA
    or running; the main thread changes it meanwhile, and `list()` copies its values
    in one step under the GIL.
    """
    return [str(request.message.delivery_tag) for request in list(state.requests.values())]


def refresh(channel: redis.Channel, tags: list[str]) -> None:
    """Give the messages `tags` a fresh score in the channel's unacknowledged index.

    `xx=True` updates members only: a message acknowledged (or restored) meanwhile
    is not put back. The channel's client adds `global_keyprefix`, as kombu's own
    commands do.
    """
    with channel.conn_or_acquire() as client:
        client.zadd(channel.unacked_index_key, dict.fromkeys(tags, time.time()), xx=True)


class Heartbeat(threading.Thread):
    """A thread that refreshes the held messages' scores every `period` seconds."""

    def __init__(self, app: Celery, period: float) -> None:
        super().__init__(name="taskgate-heartbeat", daemon=True)
        self._app = app
        self._period = period
        self._stopping = threading.Event()

    def run(self) -> None:
        with self._app.connection_for_write() as connection:
            while not self._stopping.wait(self._period):
                self._beat(connection)

    def _beat(self, connection: Any) -> None:
        tags = held_delivery_tags()
        if not tags:
            return
        try:
            refresh(connection.default_channel, tags)
        except connection.connection_errors + connection.channel_errors as exc:
            # The next beat tries again; the margin is two periods.
            logger.warning("heartbeat for %d held messages failed: %r", len(tags), exc)

    def stop(self) -> None:
        """End the thread after the beat in progress, if any."""
        self._stopping.set()
        if self.ident is not None:  # started: a worker can stop before its steps all start
            self.join(STOP_SECONDS)


class HeartbeatStep(bootsteps.StartStopStep):
    """The worker bootstep that runs the Heartbeat on a Redis broker, and nothing elsewhere.

    Add it to a worker app with `app.steps["worker"].add(HeartbeatStep)`.
    """

    requires = ("celery.worker.components:Pool",)

    def create(self, worker: Any) -> Heartbeat | None:  # type: ignore[override]
        timeout = redis_visibility_timeout(worker.app)
        if timeout is None:
            return None
        warn_of_time_limits_beyond(worker.app, timeout)
        period = timeout / BEATS_PER_TIMEOUT
        logger.info("heartbeat every %gs on held messages (visibility_timeout=%g)", period, timeout)
        return Heartbeat(worker.app, period)
