"""Redelivery on the Redis broker: soon after a whole worker dies, never while it lives.

kombu gives an unacknowledged message to another worker once it is older than
`visibility_timeout` (worker/visibility.py); taskgate's defaults make that
seconds, and its workers' heartbeat (worker/heartbeat.py) keeps the messages of
a live worker fresh. The stack is private to this module: its own redis-server
(broker and result backend) and gateway; each test starts its own workers.
"""

import os
import re
import signal
import time
from collections.abc import Iterator

import pytest

from scripts.stack import ManagedProcess, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.worker.factory import SAFE_DEFAULTS
from tests.fault_helpers import (
    await_result,
    children,
    managed,
    parent_of,
    poll,
    run_pids,
    running,
    runs,
    submit,
    unique,
)
from tests.worker_fault_stack import WorkerFaultStack, worker_fault_stack

DEFAULTS = SAFE_DEFAULTS["broker_transport_options"]
# A dead worker's message comes back once its last heartbeat is older than the
# visibility timeout, at the next sweep; the slack covers a loaded machine.
REDELIVERY_BOUND = (
    DEFAULTS["visibility_timeout"]
    + DEFAULTS["unacked_restore_interval"] * DEFAULTS["unacked_restore_throttle"]
    + 15
)
# The first run of tests.faults.hold sleeps this long in the whole-worker test: a
# task that completes within REDELIVERY_BOUND must have run again elsewhere.
HOLD_SECONDS = 120
# The long-task test: a task of LONG_TASK_SECONDS on workers with a visibility
# timeout of SHORT_VISIBILITY seconds, swept every second, and a hard time limit
# (TIME_LIMIT) above the timeout but above the task's run too.
SHORT_VISIBILITY = 3
LONG_TASK_SECONDS = 10
TIME_LIMIT = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFaultStack]:
    """Redis and a gateway; no worker (each test starts, and kills, its own)."""
    yield from worker_fault_stack(
        tmp_path_factory, "faults-redelivery", SHORT_VISIBILITY, task_time_limit=TIME_LIMIT
    )


def _kill_whole_worker(worker: ManagedProcess) -> None:
    """SIGKILL the worker's main process and its pool processes, as a lost host would."""
    pool = children(worker.popen.pid)
    worker.popen.kill()
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    worker.popen.wait(timeout=10)
    poll(lambda: not any(running(pid) for pid in pool), "the pool processes died", timeout=10)


def test_a_killed_workers_task_runs_on_another_worker_within_the_bound(
    stack: WorkerFaultStack,
) -> None:
    """Checks the default `visibility_timeout` and restore sweep (worker/factory.py).

    The whole worker running a task is SIGKILLed; nobody is left to give its
    message back, so it waits in Redis's unacknowledged set until it is older
    than `visibility_timeout` and some worker's sweep restores it. A second
    worker, with the same defaults, runs the task again, and it reaches SUCCESS
    within REDELIVERY_BOUND of the kill (visibility_timeout + sweep + slack,
    about 50 s). With the former defaults (an hour, swept every 100 s) the task
    is still not done at the bound and the test fails there.
    """
    key = unique()
    with managed(start_worker(stack.env, stack.log_dir, concurrency=1)) as first:
        task_id = submit(stack.stub, "tests.faults.hold", key, HOLD_SECONDS)
        first_pid = stack.first_run_pid(key)
        assert parent_of(first_pid) == first.popen.pid
        with managed(start_worker(stack.env, stack.log_dir, concurrency=1)) as second:
            killed_at = time.monotonic()
            _kill_whole_worker(first)
            outcome = await_result(stack.stub, task_id, timeout=REDELIVERY_BOUND)
            print(f"redelivered and done {time.monotonic() - killed_at:.1f}s after the kill")
            assert pb.TaskState.Name(outcome.state) == "TASK_STATE_SUCCESS", outcome.error
            assert outcome.result_json == "2"
            with stack.redis.client() as client:
                assert runs(client, key) == 2
                assert parent_of(run_pids(client, key)[1]) == second.popen.pid


def test_a_task_longer_than_the_visibility_timeout_runs_once(stack: WorkerFaultStack) -> None:
    """Checks the workers' heartbeat (worker/heartbeat.py).

    Two workers with a 3 s `visibility_timeout`, swept every second; a task of
    10 s. The worker running it refreshes its message's score every second, so
    the other worker's sweep never finds it overdue: the task runs once and
    returns 1. Without the heartbeat the idle worker restores the message after
    3 s and runs it a second time while the first run goes on: two runs, and
    the result is the second run's 2.
    """
    key = unique()
    with (
        managed(start_worker(stack.short_visibility_env, stack.log_dir, concurrency=1)),
        managed(start_worker(stack.short_visibility_env, stack.log_dir, concurrency=1)),
    ):
        task_id = submit(stack.stub, "tests.faults.hold", key, LONG_TASK_SECONDS)
        outcome = await_result(stack.stub, task_id, timeout=LONG_TASK_SECONDS + 20)
        assert pb.TaskState.Name(outcome.state) == "TASK_STATE_SUCCESS", outcome.error
        with stack.redis.client() as client:
            assert runs(client, key) == 1
        assert outcome.result_json == "1"


def test_a_worker_warns_of_a_time_limit_beyond_the_visibility_timeout(
    stack: WorkerFaultStack,
) -> None:
    """Checks the start-up warning (worker/visibility.py).

    A worker whose tasks may run 20 s (`task_time_limit`) on a broker with a
    3 s `visibility_timeout` logs one warning per task naming both values; a
    worker with the defaults (no time limit) logs none.
    """
    warning = re.compile(
        rf"task tests\.faults\.hold may run {TIME_LIMIT}s .* "
        rf"visibility_timeout of {SHORT_VISIBILITY}s"
    )
    with managed(start_worker(stack.short_visibility_env, stack.log_dir)) as limited:
        log = limited.log_text()
    assert len(warning.findall(log)) == 1, log
    with managed(start_worker(stack.env, stack.log_dir)) as unlimited:
        log = unlimited.log_text()
    assert "may run" not in log, log
