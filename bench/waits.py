"""Thousands of GetResult calls waiting at once: the gateway's memory and threads meanwhile.

The tasks go to the idle queue, so none finishes during the phase: every wait must
end with `ready=false` and state PENDING when its wait runs out, before its deadline.
"""

import asyncio
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

import grpc
from google.protobuf.duration_pb2 import Duration

from bench.cpu import tree_rss_bytes, tree_threads
from bench.idle import CALL_TIMEOUT, submit_request
from bench.stats import MAX_ERROR_SAMPLES
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # the async stub class exists only in the generated .pyi
    from taskgate.v1.task_service_pb2_grpc import TaskServiceAsyncStub

BATCH = 1000  # SubmitBatch's largest batch
CHANNELS = 8  # connections the waits share, as a few caller processes would
DEADLINE_BEYOND_WAIT = 5.0
SAMPLE_EVERY = 0.1  # seconds between readings of the gateway's memory and threads
MB = 1024 * 1024


@dataclass
class WaitsResult:
    """What the gateway held while the waits were open, and how each wait ended."""

    waits: int
    wait_seconds: int
    right: int = 0
    """Waits that answered not ready, PENDING, for their own task, before their deadline."""
    wrong: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0
    threads_before: int = 0
    threads_peak: int = 0
    fastest_seconds: float = float("inf")
    slowest_seconds: float = 0.0
    """The shortest and longest a wait took to answer, from the moment the client started it."""

    @property
    def rss_growth_mb(self) -> float:
        """The gateway's resident memory at its peak during the waits, less before, in MB."""
        return (self.rss_peak - self.rss_before) / MB

    @property
    def clean(self) -> bool:
        """True when every wait answered as it must."""
        return self.right == self.waits

    def note(self, problem: str) -> None:
        """Keep a few examples of what went wrong."""
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(problem[:300])


async def concurrent_waits(
    address: str, gateway_pid: int, xs: list[int], wait_seconds: int
) -> WaitsResult:
    """Submit one idle task per x to the gateway at `address`, then wait on all at once."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    try:
        stubs = [pb_grpc.TaskServiceStub(channel) for channel in channels]
        task_ids = await _submit(stubs[0], xs)
        return await _wait_all(stubs, task_ids, wait_seconds, gateway_pid)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


async def _submit(stub: "TaskServiceAsyncStub", xs: list[int]) -> list[str]:
    task_ids: list[str] = []
    for first in range(0, len(xs), BATCH):
        requests = [submit_request(x) for x in xs[first : first + BATCH]]
        batch = pb.SubmitBatchRequest(requests=requests)
        reply = await stub.SubmitBatch(batch, timeout=CALL_TIMEOUT)
        refused = [r.error.message for r in reply.results if r.WhichOneof("outcome") != "task_id"]
        if refused:
            raise RuntimeError(f"{len(refused)} submissions refused, e.g. {refused[0]}")
        task_ids += [result.task_id for result in reply.results]
    return task_ids


async def _wait_all(
    stubs: list["TaskServiceAsyncStub"], task_ids: list[str], wait_seconds: int, pid: int
) -> WaitsResult:
    result = WaitsResult(len(task_ids), wait_seconds)
    result.rss_before, result.threads_before = tree_rss_bytes(pid), tree_threads(pid)
    result.rss_peak, result.threads_peak = result.rss_before, result.threads_before
    wait = Duration(seconds=wait_seconds)
    calls = [
        asyncio.ensure_future(_one_wait(stubs[n % len(stubs)], task_id, wait, result))
        for n, task_id in enumerate(task_ids)
    ]
    # A measurement, not a wait for readiness: the peak over the whole wait.
    while not all(call.done() for call in calls):
        result.rss_peak = max(result.rss_peak, tree_rss_bytes(pid))
        result.threads_peak = max(result.threads_peak, tree_threads(pid))
        await asyncio.wait(calls, timeout=SAMPLE_EVERY)
    return result


async def _one_wait(
    stub: "TaskServiceAsyncStub", task_id: str, wait: Duration, result: WaitsResult
) -> None:
    request = pb.GetResultRequest(task_id=task_id, wait=wait)
    start = perf_counter()
    try:
        reply = await stub.GetResult(request, timeout=wait.seconds + DEADLINE_BEYOND_WAIT)
    except grpc.aio.AioRpcError as exc:
        result.errors += 1
        result.note(f"{exc.code().name}: {exc.details()}")
        return
    took = perf_counter() - start
    result.fastest_seconds = min(result.fastest_seconds, took)
    result.slowest_seconds = max(result.slowest_seconds, took)
    if reply.task_id == task_id and not reply.ready and reply.state == pb.TASK_STATE_PENDING:
        result.right += 1
    else:
        result.wrong += 1
        result.note(f"{task_id}: ready={reply.ready}, {pb.TaskState.Name(reply.state)}")
