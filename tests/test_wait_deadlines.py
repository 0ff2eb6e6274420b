"""Waits that end together still answer ready=false before their callers' deadlines.

`TASKGATE_TEST_WAITS=5000 pytest tests/test_wait_deadlines.py` runs the larger form on demand.
"""

import asyncio
import collections
import json
import os
from contextlib import ExitStack
from itertools import pairwise

import grpc
import pytest

from scripts.stack import Gateway
from taskgate.server.batch import MAX_BATCH
from taskgate.server.deadlines import WaitEnds, header_rounding
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.lifecycle_helpers import seconds

WAITS = int(os.environ.get("TASKGATE_TEST_WAITS", "1000"))
WAIT_SECONDS = 5.0
NOBODY = "nobody-consumes-this"  # the tasks stay PENDING: every wait runs out


def _submit_pending(stub: pb_grpc.TaskServiceStub) -> list[str]:
    """WAITS tasks that stay queued, submitted in full batches; their ids."""
    request = pb.SubmitRequest(
        task="tasks.add", args_json=json.dumps([1, 1]), options=pb.SubmitOptions(queue=NOBODY)
    )
    task_ids: list[str] = []
    while len(task_ids) < WAITS:
        batch = pb.SubmitBatchRequest(requests=[request] * min(MAX_BATCH, WAITS - len(task_ids)))
        task_ids.extend(result.task_id for result in stub.SubmitBatch(batch, timeout=60).results)
    return task_ids


async def _wait_all_at_once(address: str, task_ids: list[str]) -> collections.Counter[str]:
    """GetResult on every task at once, wait = deadline; how the calls ended."""

    async def wait_for(stub: pb_grpc.TaskServiceStub, task_id: str) -> str:
        ask = pb.GetResultRequest(task_id=task_id, wait=seconds(WAIT_SECONDS))
        try:
            reply: pb.GetResultResponse = await stub.GetResult(ask, timeout=WAIT_SECONDS)  # type: ignore[misc]
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "ready" if reply.ready else "ready=false"

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        ended = await asyncio.gather(*(wait_for(stub, task_id) for task_id in task_ids))
    return collections.Counter(ended)


def test_waits_that_end_together_answer_before_their_deadline(
    stub: pb_grpc.TaskServiceStub, gateway: Gateway
) -> None:
    """Checks the wait margin that scales with the waits ending together (server/deadlines.py).

    WAITS GetResult calls on tasks that stay PENDING, each with wait = its
    deadline = 5 s, fired together: every one must answer ready=false before
    its deadline. With the fixed 50 ms margin this replaced, most of them
    ended DEADLINE_EXCEEDED (871 and 732 of 1,000 in two runs; 5,000 of
    5,000 with 60 s waits): their replies left one after another, too late.
    """
    task_ids = _submit_pending(stub)
    ended = asyncio.run(_wait_all_at_once(gateway.address, task_ids))
    assert ended == {"ready=false": WAITS}, ended


def _reserve_crowd(
    ends: WaitEnds, stack: ExitStack, crowd: int, deadline: float
) -> list[tuple[float, float]]:
    """Reserve `crowd` waits with wait = deadline = `deadline` s; each end and deadline."""
    loop = asyncio.get_running_loop()
    reserved = []
    for _ in range(crowd):
        end = stack.enter_context(ends.reserve(deadline, deadline, cap=300))
        reserved.append((end, loop.time() + deadline))  # no earlier than the wait's own
    return reserved


@pytest.mark.parametrize("crowd", [1, 10, 1000])
def test_waits_sharing_a_deadline_end_one_reply_apart(crowd: int) -> None:
    """Checks WaitEnds alone: waits with one deadline end before it by at least the
    margin, and at least `per_reply` apart; a lone wait ends just the margin early."""

    async def reserve() -> list[tuple[float, float]]:
        with ExitStack() as stack:
            return _reserve_crowd(WaitEnds(margin=0.05, per_reply=0.001), stack, crowd, 10)

    reserved = asyncio.run(reserve())
    margin = 0.05 + header_rounding(10)
    assert all(end <= deadline - margin for end, deadline in reserved)
    in_order = sorted(end for end, _ in reserved)
    assert all(later - earlier >= 0.001 - 1e-9 for earlier, later in pairwise(in_order))
    first_end, first_deadline = reserved[0]
    assert first_end == pytest.approx(first_deadline - margin, abs=0.001)


def test_a_crowd_larger_than_its_wait_allows_still_ends_every_wait() -> None:
    """Checks WaitEnds alone: 1,200 waits of 1 s, one reply (1 ms) apart, do not fit
    before their end; those pushed below now end now, and every wait is released without
    error (a crowd like this once left the ends unsorted, and GetResult answered INTERNAL)."""

    async def crowd() -> tuple[list[float], list[float]]:
        ends = WaitEnds(margin=0.05, per_reply=0.001)
        with ExitStack() as stack:
            for _ in range(1200):
                stack.enter_context(ends.reserve(1.0, 1.0, cap=300))
            held = list(ends._ends)
        return held, ends._ends

    held, left = asyncio.run(crowd())
    assert held == sorted(held)
    assert left == []


def test_waits_whose_deadline_leaves_room_end_when_they_asked() -> None:
    """Checks WaitEnds alone: 1,000 waits of 3 s with an 8 s deadline, started together,
    all end 3 s from now (their replies fit before the deadline however they queue);
    a wait with wait = deadline = 3 s among them still keeps its margin."""

    async def crowd() -> tuple[list[float], float, float]:
        ends = WaitEnds(margin=0.05, per_reply=0.001)
        with ExitStack() as stack:
            now = asyncio.get_running_loop().time()
            roomy = [
                stack.enter_context(ends.reserve(3.0, 8.0, cap=300)) - now for _ in range(1000)
            ]
            tight = stack.enter_context(ends.reserve(3.0, 3.0, cap=300)) - now
            return roomy, tight, now

    roomy, tight, _ = asyncio.run(crowd())
    assert roomy == pytest.approx([3.0] * 1000, abs=0.005)
    assert tight == pytest.approx(3.0 - 0.05 - header_rounding(3.0), abs=0.005)


def test_a_short_wait_keeps_its_length_among_long_ones() -> None:
    """Checks that only waits ending near a deadline crowd it: a 1 s wait with a 1 s
    deadline, among 1,000 waits that end in 60 s, still waits 1 s less the margin."""

    async def short_wait() -> float:
        ends = WaitEnds(margin=0.05, per_reply=0.001)
        with ExitStack() as stack:
            _reserve_crowd(ends, stack, 1000, 60)
            started = asyncio.get_running_loop().time()
            with ends.reserve(1.0, 1.0, cap=300) as end:
                return end - started

    assert asyncio.run(short_wait()) == pytest.approx(1 - 0.05 - 0.01, abs=0.005)


@pytest.mark.parametrize(
    ("timeout", "step"), [(0.5, 0.001), (5.0, 0.01), (60.0, 0.1), (300.0, 1.0), (3600.0, 10.0)]
)
def test_the_deadline_allows_for_the_rounding_of_grpc_timeout(timeout: float, step: float) -> None:
    """Checks header_rounding against the steps in which gRPC C-core rounds a timeout up."""
    assert header_rounding(timeout) == pytest.approx(step)


def test_a_wait_ended_gives_back_its_place() -> None:
    """Checks that a finished wait no longer crowds the waits that come after it."""

    async def ends_left() -> int:
        ends = WaitEnds()
        with ExitStack() as stack:
            _reserve_crowd(ends, stack, 100, 10)
        return len(ends)

    assert asyncio.run(ends_left()) == 0
