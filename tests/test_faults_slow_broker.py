"""A broker that stops answering for a while (CLIENT PAUSE): deadlines hold, nothing leaks.

The stack is private to this module: a broker redis-server that the test
pauses, a separate result-backend redis-server that keeps answering, a
worker and a gateway.
"""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, ManagedProcess, RedisServer, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import (
    Outcome,
    await_result,
    fault_env,
    managed,
    outcome,
    poll,
    request,
    runs,
    submit,
    thread_count,
    unique,
)

# Shorter than kombu's 5 s socket timeout, so a paused publish lands once the pause ends.
# A publish that outlasts the socket timeout is ambiguous: Redis may still run its LPUSH
# while kombu, seeing a connection error, sends it again (the task would run twice).
PAUSE_MS = 3500
DEADLINE = 1.0
# How many Submits wait on the paused broker at once.
CALLERS = 3


@dataclass
class Stack:
    """A broker to pause, a backend that stays responsive, and the gateway's pid."""

    broker: RedisServer
    backend: RedisServer
    gateway_pid: int
    stub: pb_grpc.TaskServiceStub
    env: dict[str, str]
    log_dir: Path
    workers: list[ManagedProcess]
    """The running worker is the last; a test may replace it."""

    def replace_worker(self) -> None:
        """Stop the worker (a warm shutdown gives back what it holds) and start another."""
        self.workers[-1].stop()
        self.workers.append(start_worker(self.env, self.log_dir))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A broker, a separate backend, a worker and a gateway."""
    log_dir = tmp_path_factory.mktemp("faults-slow-broker")
    with ExitStack() as processes:
        broker = processes.enter_context(managed(RedisServer(log_dir)))
        backend = processes.enter_context(managed(RedisServer(log_dir)))
        # The worker view is refreshed in the publish threads: keep it out of the count.
        env = fault_env(broker.url, backend.url, TASKGATE_WORKERS_REFRESH="3600")
        workers = [start_worker(env, log_dir)]
        processes.callback(lambda: [worker.stop() for worker in workers])
        gateway = processes.enter_context(managed(Gateway(env, log_dir)))
        channel = processes.enter_context(grpc.insecure_channel(gateway.address))
        stub = pb_grpc.TaskServiceStub(channel)
        yield Stack(broker, backend, gateway.popen.pid, stub, env, log_dir, workers)


def _pause_broker(stack: Stack, milliseconds: int) -> float:
    """Pause every client of the broker; the monotonic time when the pause ends."""
    with stack.broker.client() as client:
        client.execute_command("CLIENT", "PAUSE", milliseconds, "ALL")
    return time.monotonic() + milliseconds / 1000


def _submits_during_pause(stack: Stack, keys: list[str], deadline: float) -> list[Outcome]:
    """Submit one counting task per key, all at once; how each call ended."""

    def call(key: str) -> Outcome:
        submission = request("tests.count_run", key)
        return outcome(lambda: stack.stub.Submit(submission, timeout=deadline))

    with ThreadPoolExecutor(len(keys)) as callers:
        return list(callers.map(call, keys))


def test_a_paused_broker_costs_a_submit_its_deadline_and_nothing_more(stack: Stack) -> None:
    """Checks that a slow publish is bounded by the caller's deadline and runs off the loop.

    The broker is paused for 3.5 s. Three Submits with a 1 s deadline end
    DEADLINE_EXCEEDED at about 1 s, while a GetStatus (the backend is not
    paused) answers at once: the blocking publish runs in the publish
    threads, not on the event loop. After the pause the gateway serves
    normally and its thread count returns to the baseline taken after a
    warm-up pause with generous deadlines (so the publish threads have grown
    to what the test needs at once): a thread per timed-out call, or a
    publish stuck for good, would show as extra threads or as a Submit that
    never completes. If the publish blocked the event loop, the
    GetStatus would wait for the pause too.
    """
    done = submit(stack.stub, "tasks.add", 1, 2)
    await_result(stack.stub, done)
    # Warm-up: a pause with deadlines that outlast it grows the publish threads to what
    # the calls below may need at once (the cut-off publishes, then one more Submit).
    _pause_broker(stack, 1000)
    warm = _submits_during_pause(stack, [unique() for _ in range(CALLERS + 1)], 10.0)
    assert all(ended.code == grpc.StatusCode.OK for ended in warm), warm
    baseline = thread_count(stack.gateway_pid)

    keys = [unique() for _ in range(CALLERS)]
    ends = _pause_broker(stack, PAUSE_MS)
    outcomes = _submits_during_pause(stack, keys, DEADLINE)
    for ended in outcomes:
        assert ended.code == grpc.StatusCode.DEADLINE_EXCEEDED, ended
        assert DEADLINE - 0.05 < ended.seconds < DEADLINE + 0.5, ended
    status = outcome(lambda: stack.stub.GetStatus(pb.GetStatusRequest(task_id=done), timeout=2))
    assert time.monotonic() < ends, "the pause ended before GetStatus was asked"
    assert status.code == grpc.StatusCode.OK, status
    assert status.seconds < 0.5, f"GetStatus waited for the paused broker: {status}"

    poll(stack.broker.ping, "the broker answers again", timeout=PAUSE_MS / 1000 + 2)
    after = submit(stack.stub, "tests.count_run", unique(), timeout=5)
    assert await_result(stack.stub, after, timeout=10).result_json == "1"
    poll(lambda: thread_count(stack.gateway_pid) <= baseline, "threads back to baseline", 10)
    with stack.backend.client() as client:
        # A timed-out Submit's publish finishes on its own once the broker answers
        # (before the socket timeout): the task runs once at most, never twice.
        assert all(runs(client, key) <= 1 for key in keys)


def test_a_submit_retried_with_its_key_after_a_deadline_succeeds_once_the_broker_is_back(
    stack: Stack,
) -> None:
    """Checks that a Submit cut off by its deadline leaves its idempotency key usable.

    A client whose Submit ended DEADLINE_EXCEEDED cannot know whether the
    task was queued; the contract's answer is to retry with the same
    idempotency key. Once the broker answers again, that retry must return
    the task id (deduplicated, or published now) within its deadline, and
    the task must run once. If the cut-off call leaves its claim unpublished
    (neither marked published nor freed), every retry polls the claim until
    it goes stale and ends DEADLINE_EXCEEDED too.
    """
    key = unique()
    submission = request("tests.count_run", key, idempotency_key=key)
    _pause_broker(stack, PAUSE_MS)
    cut_off = outcome(lambda: stack.stub.Submit(submission, timeout=DEADLINE))
    assert cut_off.code == grpc.StatusCode.DEADLINE_EXCEEDED, cut_off
    # The broker answers again: the cut-off publish has landed.
    poll(stack.broker.ping, "the broker answers again", timeout=PAUSE_MS / 1000 + 2)

    retried = outcome(lambda: stack.stub.Submit(submission, timeout=5))
    assert retried.code == grpc.StatusCode.OK, f"the retry ended {retried}"
    task_id = stack.stub.Submit(submission, timeout=5).task_id
    # The worker's own connection was paused too, and a worker whose ack timed out in
    # the pause can stop consuming (kombu; seen here): the gateway's part is done once
    # the task is in the broker, so a fresh worker runs it.
    stack.replace_worker()
    assert await_result(stack.stub, task_id, timeout=30).result_json == "1"
    with stack.backend.client() as client:
        assert runs(client, key) == 1
