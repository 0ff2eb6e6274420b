"""Example tasks, registered under the names of Celery's first-steps tutorial.

They are loaded only when no task modules are configured, so a fresh checkout
has something to call.
"""

import time
from typing import Any

from celery import Task, shared_task


@shared_task(name="tasks.add")
def add(x: Any, y: Any) -> Any:
    """Return `x + y`: the tutorial's first task."""
    return x + y


@shared_task(name="tasks.fail")
def fail(message: str) -> None:
    """Raise `ValueError(message)`, to show how a failure reaches the caller."""
    raise ValueError(message)


@shared_task(name="tasks.sleep")
def sleep(seconds: float) -> float:
    """Sleep for `seconds`, then return them: a task that takes a while."""
    time.sleep(seconds)
    return seconds


@shared_task(name="tasks.progress", bind=True)
def progress(self: Task[..., int], steps: int, delay: float = 0.2) -> int:
    """Report a PROGRESS state with `{"current": i, "total": steps}` after each step."""
    for current in range(1, steps + 1):
        time.sleep(delay)
        self.update_state(state="PROGRESS", meta={"current": current, "total": steps})
    return steps


@shared_task(name="tasks.retry", bind=True, max_retries=None)
def retry(self: Task[..., int], times: int, countdown: float = 0.5) -> int:
    """Retry `times` times, `countdown` seconds apart, then return how often it retried."""
    if self.request.retries < times:
        raise self.retry(countdown=countdown)
    return int(self.request.retries)


@shared_task(name="tasks.subtraction", ignore_result=True)
def subtraction(x: Any, y: Any) -> Any:
    """Return `x - y` and store no result: the tutorial's `ignore_result=True` example."""
    return x - y


@shared_task(name="tasks.echo_request", bind=True)
def echo_request(self: Task[..., dict[str, Any]], *header_names: str) -> dict[str, Any]:
    """Report how the task was delivered: queue, priority, eta and the named headers."""
    delivery = self.request.delivery_info or {}
    return {
        "queue": delivery.get("routing_key"),
        "priority": delivery.get("priority"),
        "eta": self.request.eta,
        "expires": self.request.expires,
        "headers": {name: getattr(self.request, name, None) for name in header_names},
    }
