"""Tasks that exist only for the fault tests: each run leaves evidence in Redis.

A worker loads them with TASKGATE_TASK_MODULES=...,tests.fault_tasks; their
names start with "tests." so a gateway with TASKGATE_TASKS=tests.* allows them.
"""

import os
import time
from typing import Any

from celery import Task, shared_task

from tests.support_tasks import RUNS_PREFIX

PIDS_PREFIX = "taskgate-test:pids:"


@shared_task(name="tests.faults.hold", bind=True)
def hold(self: Task[..., int], key: str, seconds: float) -> int:
    """Count a run and record this pool process's pid under `key`; return the count.

    The first run then sleeps `seconds`, long enough for a test to kill the
    process running it; a redelivered run returns at once.
    """
    client: Any = self.backend.client  # type: ignore[attr-defined]
    count = int(client.incr(RUNS_PREFIX + key))
    client.rpush(PIDS_PREFIX + key, os.getpid())
    if count == 1:
        time.sleep(seconds)
    return count
