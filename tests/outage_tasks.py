"""A task for the result-backend outage tests: it counts its runs outside the backend.

`tests.count_run` counts in the result backend's Redis, which these tests
kill; this task counts in a Redis the test names (one that stays up), so a
run during the outage is still counted and cannot fail for want of the backend.
"""

import functools
import time
from typing import Any

import redis
from celery import Task, shared_task

from tests.support_tasks import RUNS_PREFIX


@functools.cache
def _counter(url: str) -> redis.Redis:
    """One client per pool process and Redis (a forked child makes its own)."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=4)


@shared_task(name="tests.outage.count", bind=True)
def count(
    self: Task[..., dict[str, Any]], counter_url: str, key: str, hold: float = 0
) -> dict[str, Any]:
    """Count one more run under `key` in the Redis at `counter_url`.

    The first run then sleeps `hold` seconds, long enough for a test to kill
    the backend before the result is stored. Returns the count and whether
    the broker flagged this delivery as a redelivery (as it does for a
    message given back with a requeue).
    """
    runs = int(_counter(counter_url).incr(RUNS_PREFIX + key))
    if runs == 1:
        time.sleep(hold)
    delivery_info = self.request.delivery_info or {}
    return {"runs": runs, "redelivered": bool(delivery_info.get("redelivered"))}
