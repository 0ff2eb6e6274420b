"""Hostile inputs pinned one by one: each is a way a caller can hurt the gateway or the workers.

The property tests in test_hostile.py keep their random values inside the ranges
below; each value here was found outside them, and is kept as a regression test.
Every test says what a user would notice.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from scripts.stack import Gateway, ManagedProcess, RedisServer, celery_env, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests import hostile_strategies as hs
from tests.hostile_helpers import REQUEST_TYPES, answer, send_raw

VOID = pb.SubmitOptions(queue=hs.VOID_QUEUE)
ADD = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]", options=VOID)
HUGE_SECONDS = 2**62  # a Duration far outside its documented range of +-10,000 years


def _void(options: pb.SubmitOptions) -> pb.SubmitRequest:
    """tasks.add(1, 1) with `options`, sent to the queue no worker reads."""
    options.queue = hs.VOID_QUEUE
    return pb.SubmitRequest(task="tasks.add", args_json="[1, 1]", options=options)


@pytest.mark.parametrize("rpc", sorted(REQUEST_TYPES))
def test_an_undecodable_request_gets_a_documented_code(channel: grpc.Channel, rpc: str) -> None:
    truncated = b"\x0a\x05ab"  # field 1, five bytes announced, two sent
    code, details = answer(lambda: send_raw(channel, rpc, truncated, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "not a valid message" in details


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(
            _void(pb.SubmitOptions(countdown=Duration(seconds=3 * 10**11))),
            id="countdown-year-11500",
        ),
        pytest.param(
            _void(pb.SubmitOptions(countdown=Duration(seconds=HUGE_SECONDS))), id="countdown-huge"
        ),
        pytest.param(
            _void(pb.SubmitOptions(eta=Timestamp(seconds=253_402_300_800))), id="eta-year-10000"
        ),
        pytest.param(
            _void(pb.SubmitOptions(eta=Timestamp(seconds=0, nanos=-1))), id="eta-negative-nanos"
        ),
        pytest.param(
            _void(pb.SubmitOptions(expires=Timestamp(seconds=-(10**12)))),
            id="expires-before-year-1",
        ),
        pytest.param(
            _void(
                pb.SubmitOptions(
                    retry_policy=pb.PublishRetryPolicy(
                        max_retries=1, interval_start=Duration(seconds=HUGE_SECONDS)
                    )
                )
            ),
            id="retry-interval-huge",
        ),
    ],
)
def test_a_time_out_of_range_is_refused_not_a_crash(
    stub: pb_grpc.TaskServiceStub, request_: pb.SubmitRequest
) -> None:
    code, details = answer(lambda: stub.Submit(request_, timeout=10))
    assert code in hs.DOCUMENTED["Submit"], f"{code.name}: {details}"


@pytest.mark.parametrize("rpc", ["GetResult", "Execute"])
def test_a_wait_out_of_range_is_refused_not_a_crash(
    stub: pb_grpc.TaskServiceStub, rpc: str
) -> None:
    huge = Duration(seconds=HUGE_SECONDS)
    if rpc == "GetResult":
        request = pb.GetResultRequest(task_id=str(uuid.uuid4()), wait=huge)
        code, details = answer(lambda: stub.GetResult(request, timeout=10))
    else:
        execute = pb.ExecuteRequest(submit=ADD, wait=huge)
        code, details = answer(lambda: stub.Execute(execute, timeout=1))
    assert code in hs.DOCUMENTED[rpc], f"{code.name}: {details}"


def test_one_impossible_item_fails_only_itself(stub: pb_grpc.TaskServiceStub) -> None:
    bad = _void(pb.SubmitOptions(eta=Timestamp(seconds=253_402_300_800)))
    code, details = answer(
        lambda: stub.SubmitBatch(pb.SubmitBatchRequest(requests=[ADD, bad]), timeout=10)
    )
    assert code == grpc.StatusCode.OK, f"{code.name}: {details}"


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_number_too_large_for_a_double_never_becomes_infinity(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    submit = pb.SubmitRequest(task="tasks.add", args_json="[1e999, 1]")
    replies: list[pb.ExecuteResponse] = []
    code, details = answer(
        lambda: replies.append(
            stub.Execute(pb.ExecuteRequest(submit=submit, wait=Duration(seconds=20)), timeout=30)
        )
    )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return
    assert code == grpc.StatusCode.OK, details
    assert replies[0].ready
    _strict_json(replies[0].result_json)


def test_a_header_kombu_reads_as_compression_never_loses_the_task(
    stub: pb_grpc.TaskServiceStub, worker: ManagedProcess
) -> None:
    options = pb.SubmitOptions(headers={"compression": "zlib"})
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]", options=options)
    submitted: list[str] = []
    code, details = answer(lambda: submitted.append(stub.Submit(request, timeout=10).task_id))
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return
    assert code == grpc.StatusCode.OK, details
    task_id = submitted[0]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        wait = pb.GetResultRequest(task_id=task_id, wait=Duration(nanos=200_000_000))
        if stub.GetResult(wait, timeout=5).ready:
            return
        discarded = f"'id': '{task_id}'" in worker.log_text()
        assert not discarded, "the worker discarded the task; it will never run"
    raise AssertionError(f"task {task_id} did not run within 15s")


def test_cancel_revokes_a_queued_task_that_stores_no_result(stub: pb_grpc.TaskServiceStub) -> None:
    stub.ListTasks(pb.ListTasksRequest(), timeout=10)  # the gateway learns what ignores results
    request = pb.SubmitRequest(task="tasks.subtraction", args_json="[5, 3]", options=VOID)
    task_id = stub.Submit(request, timeout=10).task_id
    code, details = answer(lambda: stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10))
    assert code == grpc.StatusCode.OK, f"{code.name}: {details}"


BURST = 2500


async def _burst(address: str, task_id: str) -> set[grpc.StatusCode]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        request = pb.GetStatusRequest(task_id=task_id)
        replies = await asyncio.gather(
            *(stub.GetStatus(request, timeout=60) for _ in range(BURST)), return_exceptions=True
        )
    return {
        reply.code() if isinstance(reply, grpc.aio.AioRpcError) else grpc.StatusCode.OK
        for reply in replies
    }


def test_a_burst_of_calls_gets_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, gateway: Gateway
) -> None:
    task_id = stub.Submit(ADD, timeout=10).task_id
    codes = asyncio.run(_burst(gateway.address, task_id))
    assert codes <= hs.DOCUMENTED["GetStatus"], sorted(code.name for code in codes)


# --- a queue name that is one of the broker's own keys -------------------------------


@dataclass(frozen=True)
class PrivateStack:
    """A redis-server, a worker and a gateway of the test's own."""

    worker: ManagedProcess
    stub: pb_grpc.TaskServiceStub


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    server = RedisServer(tmp_path)
    started: list[ManagedProcess] = []
    try:
        env = celery_env(server.url, server.url)
        started.append(start_worker(env, tmp_path))
        gateway = Gateway(env, tmp_path)
        started.append(gateway)
        with grpc.insecure_channel(gateway.address) as channel:
            yield PrivateStack(started[0], pb_grpc.TaskServiceStub(channel))
    finally:
        for process in reversed(started):
            process.stop()
        server.stop()


@pytest.mark.parametrize("queue", ["unacked", "unacked_index"])
def test_a_queue_named_after_a_broker_key_does_not_stop_the_workers(
    private_stack: PrivateStack, queue: str
) -> None:
    stub = private_stack.stub
    hostile = pb.SubmitRequest(
        task="tasks.add", args_json="[1, 1]", options=pb.SubmitOptions(queue=queue)
    )
    code, details = answer(lambda: stub.Submit(hostile, timeout=10))
    assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, details
    task_id = stub.Submit(pb.SubmitRequest(task="tasks.add", args_json="[2, 3]")).task_id
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        wait = pb.GetResultRequest(task_id=task_id, wait=Duration(nanos=200_000_000))
        if stub.GetResult(wait, timeout=5).ready:
            return
        assert private_stack.worker.alive(), private_stack.worker.log_text()[-1500:]
    raise AssertionError(f"tasks.add did not run within 15s after a Submit to queue {queue!r}")
