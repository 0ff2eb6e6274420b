"""A worker that dies mid-task: the task is delivered again and completes (at-least-once).

The stack is private to this module: its own redis-server (broker and result
backend) and gateway; each test starts the workers it kills.
"""

import json
import os
import signal
from collections.abc import Iterator

import pytest

from scripts.stack import ManagedProcess, start_worker
from taskgate.v1 import task_service_pb2 as pb
from tests.fault_helpers import (
    await_result,
    managed,
    parent_of,
    poll,
    request,
    run_pids,
    running,
    runs,
    submit,
    unique,
)
from tests.worker_fault_stack import WorkerFaultStack, worker_fault_stack

# The first run of tests.faults.hold sleeps this long: far longer than the test needs
# to kill it, so a task that completes must have run again.
HOLD_SECONDS = 120
# With the Redis broker, a message whose worker died unacknowledged comes back only
# after the visibility timeout (30 s by default); the second test shortens it.
VISIBILITY_SECONDS = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFaultStack]:
    """Redis and a gateway; no worker (each test starts, and kills, its own)."""
    yield from worker_fault_stack(tmp_path_factory, "faults-worker", VISIBILITY_SECONDS)


def _kill_worker(worker: ManagedProcess, pool_pid: int) -> None:
    """SIGKILL the worker's main process; its pool dies with it (Celery sets PDEATHSIG)."""
    worker.popen.kill()
    worker.popen.wait(timeout=10)
    poll(lambda: not running(pool_pid), "the orphaned pool process died", timeout=10)


def test_a_task_whose_pool_process_is_killed_runs_again_and_completes(
    stack: WorkerFaultStack,
) -> None:
    """Checks `task_acks_late` + `task_reject_on_worker_lost` (worker/factory.py SAFE_DEFAULTS).

    The pool process running the task is SIGKILLed: the main process sees the
    child lost and, because the message is acknowledged only after the task
    and rejected with requeue when its process is lost, puts it back at once
    (no visibility timeout involved: this worker keeps the default 30 s). The
    task runs a second time and succeeds. With either protection off the
    message is acknowledged and the task stored as FAILURE (WorkerLostError):
    GetResult returns FAILURE and the run count stays 1.
    """
    with managed(start_worker(stack.env, stack.log_dir, concurrency=1)) as worker:
        key = unique()
        task_id = submit(stack.stub, "tests.faults.hold", key, HOLD_SECONDS)
        pool_pid = stack.first_run_pid(key)
        assert parent_of(pool_pid) == worker.popen.pid, "not a pool process of the worker"
        os.kill(pool_pid, signal.SIGKILL)

        outcome = await_result(stack.stub, task_id, timeout=30)
        assert pb.TaskState.Name(outcome.state) == "TASK_STATE_SUCCESS", outcome.error
        assert outcome.result_json == "2"
        with stack.redis.client() as client:
            assert runs(client, key) == 2
            second_pid = run_pids(client, key)[1]
        assert second_pid != pool_pid
        assert worker.alive()


def test_a_task_whose_whole_worker_is_killed_completes_on_a_new_worker(
    stack: WorkerFaultStack,
) -> None:
    """Checks `task_acks_late` and the broker's visibility timeout.

    The worker's main process is SIGKILLed mid-task (its pool process dies
    with it): nobody is left to reject the message, so it stays in Redis's
    unacknowledged set until `visibility_timeout` passes and a live worker
    puts it back. The workers here use a configuration module with a 3 s
    `visibility_timeout` (and a 1 s restore sweep), because the default 30 s
    would make this test slow (test_faults_redelivery.py kills a worker with
    the defaults); the socket timeouts are kept. The new worker runs the task
    a second time and it succeeds. With `task_acks_late` off the
    message is acknowledged on receipt and lost with the worker: the task
    never completes and this test times out waiting for it.
    """
    key = unique()
    with managed(start_worker(stack.short_visibility_env, stack.log_dir, concurrency=1)) as first:
        task_id = submit(stack.stub, "tests.faults.hold", key, HOLD_SECONDS)
        pool_pid = stack.first_run_pid(key)
        _kill_worker(first, pool_pid)
    status = stack.stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=5)
    assert not pb.TaskState.Name(status.state).endswith(("SUCCESS", "FAILURE"))

    with managed(start_worker(stack.short_visibility_env, stack.log_dir, concurrency=1)):
        outcome = await_result(stack.stub, task_id, timeout=30)
    assert pb.TaskState.Name(outcome.state) == "TASK_STATE_SUCCESS", outcome.error
    assert outcome.result_json == "2"
    with stack.redis.client() as client:
        assert runs(client, key) == 2


def _redelivered(raw: bytes) -> str:
    """The queued message `raw` as kombu puts back one that was delivered before."""
    message = json.loads(raw)
    message["headers"]["redelivered"] = True
    message["properties"]["delivery_info"]["redelivered"] = True
    return json.dumps(message)


def test_a_succeeded_task_delivered_again_does_not_run_again(stack: WorkerFaultStack) -> None:
    """Checks `worker_deduplicate_successful_tasks` (worker/factory.py SAFE_DEFAULTS).

    A worker that dies after storing SUCCESS but before acknowledging leaves a
    message that comes back marked redelivered. The test makes exactly that
    message: it copies a task's message from its queue before any worker takes
    it, lets a worker run the task, then pushes the copy back marked as kombu
    marks a restored message. The worker skips it because the task already
    succeeded: the run count stays 1. A second task queued behind the copy
    shows the worker has dealt with it. With the setting off the copy runs
    again and the count is 2.
    """
    queue, key = unique("dedup-"), unique()

    def hold_on_queue(run_key: str) -> str:
        """Submit tests.faults.hold(run_key, 0) to the test's queue; its task id."""
        held = request("tests.faults.hold", run_key, 0)
        held.options.queue = queue
        return stack.stub.Submit(held, timeout=10).task_id

    first = hold_on_queue(key)
    with stack.redis.client() as client:
        [raw] = client.lrange(queue, 0, -1)
    with managed(start_worker(stack.env, stack.log_dir, queues=queue, concurrency=1)):
        assert await_result(stack.stub, first).result_json == "1"
        with stack.redis.client() as client:
            client.lpush(queue, _redelivered(raw))
        behind = hold_on_queue(unique())
        assert await_result(stack.stub, behind).result_json == "1"
        with stack.redis.client() as client:
            assert client.llen(queue) == 0
            assert runs(client, key) == 1
    reply = stack.stub.GetResult(pb.GetResultRequest(task_id=first), timeout=5)
    assert pb.TaskState.Name(reply.state) == "TASK_STATE_SUCCESS"
