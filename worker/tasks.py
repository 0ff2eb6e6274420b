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
