"""A thousand GetResult calls waiting at once on one gateway, without a thread per wait.

`TASKGATE_TEST_WAITS=5000 pytest tests/test_concurrent_waits.py` runs the larger form on demand.
"""

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from scripts.stack import Gateway, ManagedProcess, RedisServer, start_worker
from taskgate.server.batch import MAX_BATCH
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.lifecycle_helpers import RESULT_KEY_PREFIX, seconds

WAITS = int(os.environ.get("TASKGATE_TEST_WAITS", "1000"))
QUEUE = "held"  # no worker consumes it until every wait is in place
MAX_THREADS = 100


def gateway_threads(gateway: Gateway) -> int:
    """The number of threads in the gateway process, from /proc."""
    status = Path(f"/proc/{gateway.popen.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Threads:"))
    return int(line.split()[1])


@pytest.fixture
def start_held_worker(
    stack_env: dict[str, str], stack_dir: Path
) -> Iterator[Callable[[], ManagedProcess]]:
    """Starts, on demand, a worker for the held queue; stops it afterwards."""
    started: list[ManagedProcess] = []

    def start() -> ManagedProcess:
        started.append(start_worker(stack_env, stack_dir, queues=QUEUE, concurrency=4))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def _submit_all(stub: pb_grpc.TaskServiceStub) -> list[str]:
    """Submit tasks.add(i, i) for every i, in full batches; their ids in order."""
    requests = [
        pb.SubmitRequest(
            task="tasks.add", args_json=json.dumps([i, i]), options=pb.SubmitOptions(queue=QUEUE)
        )
        for i in range(WAITS)
    ]
    task_ids: list[str] = []
    for start in range(0, WAITS, MAX_BATCH):
        batch = pb.SubmitBatchRequest(requests=requests[start : start + MAX_BATCH])
        results = stub.SubmitBatch(batch, timeout=30).results
        errors = [result.error for result in results if result.WhichOneof("outcome") == "error"]
        assert not errors, f"{len(errors)} of {len(results)} refused, first: {errors[0]}"
        task_ids.extend(result.task_id for result in results)
    return task_ids


async def _subscribed(redis: Redis, task_ids: list[str]) -> int:
    """How many of the tasks' result channels the gateway is subscribed to."""
    counts = await redis.pubsub_numsub(*(RESULT_KEY_PREFIX + task_id for task_id in task_ids))
    return sum(1 for _, count in counts if count > 0)


async def _wait_all(
    gateway: Gateway,
    redis_url: str,
    task_ids: list[str],
    start_worker_now: Callable[[], ManagedProcess],
) -> tuple[list[pb.GetResultResponse], int, int]:
    """Wait on every task at once, then let a worker run them; return replies and peak threads."""
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        wait = seconds(60)
        calls = [
            asyncio.ensure_future(
                stub.GetResult(pb.GetResultRequest(task_id=task_id, wait=wait), timeout=90)
            )
            for task_id in task_ids
        ]
        redis = Redis.from_url(redis_url)
        try:
            deadline = time.monotonic() + 30 * max(1, WAITS // 1000)
            while (subscribed := await _subscribed(redis, task_ids)) < WAITS:
                assert time.monotonic() < deadline, f"only {subscribed} waits in place"
                assert not any(call.done() for call in calls), "a wait ended early"
                await asyncio.sleep(0.1)
        finally:
            await redis.aclose()
        # Every call waits now, on the gateway's one shared subscription.
        threads_while_waiting = gateway_threads(gateway)
        peak = threads_while_waiting
        await asyncio.to_thread(start_worker_now)
        while not all(call.done() for call in calls):
            peak = max(peak, gateway_threads(gateway))
            await asyncio.wait(calls, timeout=0.1)
        return [call.result() for call in calls], threads_while_waiting, peak


def test_a_thousand_waits_need_no_thread_each(
    stub: pb_grpc.TaskServiceStub,
    gateway: Gateway,
    redis_server: RedisServer,
    start_held_worker: Callable[[], ManagedProcess],
) -> None:
    task_ids = _submit_all(stub)
    replies, threads_while_waiting, peak = asyncio.run(
        _wait_all(gateway, redis_server.url, task_ids, start_held_worker)
    )
    assert [reply.task_id for reply in replies] == task_ids
    assert all(reply.ready and reply.state == pb.TASK_STATE_SUCCESS for reply in replies)
    assert [reply.result_json for reply in replies] == [str(2 * i) for i in range(WAITS)]
    assert threads_while_waiting < MAX_THREADS, threads_while_waiting
    assert peak < MAX_THREADS, peak
