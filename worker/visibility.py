"""The Redis broker's visibility timeout, and the tasks whose time limit outlasts it.

kombu's Redis transport emulates acknowledgements: a message delivered and not yet
acknowledged is given to another worker once it is older than `visibility_timeout`.
A task allowed to run longer than that is started a second time while the first run
goes on, unless its worker keeps the message held (worker/heartbeat.py does).
RabbitMQ acknowledges per connection and has no such timeout.
"""

import logging

from celery import Celery
from kombu.transport import redis

logger = logging.getLogger(__name__)


def redis_visibility_timeout(app: Celery) -> float | None:
    """The broker's `visibility_timeout` in seconds; None when the broker has none.

    Read from the transport options without connecting, as kombu's Redis channel
    reads them: only the Redis transports (and Sentinel, a subclass) have one, and
    only while `ack_emulation` is on.
    """
    with app.connection_for_write() as connection:
        if not isinstance(connection.transport, redis.Transport):
            return None
        options = connection.transport_options or {}
    if not options.get("ack_emulation", redis.Channel.ack_emulation):
        return None
    return float(options.get("visibility_timeout", redis.Channel.visibility_timeout))


def time_limits_beyond(app: Celery, visibility_timeout: float) -> dict[str, float]:
    """The registered tasks whose hard time limit exceeds `visibility_timeout`, by name.

    A task's own `time_limit` wins over `task_time_limit`, as in Celery's worker.
    Celery's built-in tasks are left out.
    """
    default = app.conf.task_time_limit
    found = {}
    for name, task in sorted(app.tasks.items()):
        limit = task.time_limit or default
        if not name.startswith("celery.") and limit and limit > visibility_timeout:
            found[name] = float(limit)
    return found


def warn_of_time_limits_beyond(app: Celery, visibility_timeout: float) -> None:
    """Log one warning per task whose hard time limit exceeds `visibility_timeout`."""
    for name, limit in time_limits_beyond(app, visibility_timeout).items():
        logger.warning(
            "task %s may run %gs (its hard time limit), longer than the Redis broker's "
            "visibility_timeout of %gs: only a worker with taskgate's heartbeat keeps it "
            "from being started again on another worker while it runs",
            name,
            limit,
            visibility_timeout,
        )
