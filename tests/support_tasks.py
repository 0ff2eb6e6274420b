"""Tasks that exist only for the tests: they leave evidence of each run in Redis."""

from typing import Any

from celery import Task, shared_task

RUNS_PREFIX = "taskgate-test:runs:"


@shared_task(name="tests.count_run", bind=True)
def count_run(self: Task[..., int], key: str) -> int:
    """Count one more run under `key` in the result backend's Redis; return the count."""
    client: Any = self.backend.client  # type: ignore[attr-defined]
    return int(client.incr(RUNS_PREFIX + key))
