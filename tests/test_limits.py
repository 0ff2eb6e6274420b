"""Limits: oversized and over-nested input, too many calls at once, callers over their rate."""

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from scripts.stack import Gateway, ManagedProcess
from taskgate.server.codec import MAX_JSON_BYTES, MAX_JSON_DEPTH
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, detail, rich_status, violated_fields


@pytest.fixture
def limited(
    stack_env: dict[str, str],
    worker: ManagedProcess,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Gateway]:
    """A gateway with the limits given by the test's `limits` marker."""
    limits: dict[str, str] = request.node.get_closest_marker("limits").kwargs
    gateway = Gateway({**stack_env, **limits}, tmp_path)
    yield gateway
    gateway.stop()


def test_arguments_over_the_field_limit_are_invalid(stub: pb_grpc.TaskServiceStub) -> None:
    big = json.dumps(["x" * MAX_JSON_BYTES])
    request = pb.SubmitRequest(task="tasks.add", args_json=big)
    assert violated_fields(call_error(lambda: stub.Submit(request, timeout=10))) == ["args_json"]


def test_json_nested_past_the_limit_is_invalid(stub: pb_grpc.TaskServiceStub) -> None:
    deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    request = pb.SubmitRequest(task="tasks.add", kwargs_json=json.dumps({"x": json.loads(deep)}))
    assert violated_fields(call_error(lambda: stub.Submit(request, timeout=10))) == ["kwargs_json"]
    deepest = json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))
    at_limit = json.dumps({"x": deepest, "y": []})  # the object itself is one level
    assert stub.Submit(pb.SubmitRequest(task="tasks.add", kwargs_json=at_limit)).task_id


def test_too_many_headers_are_invalid(stub: pb_grpc.TaskServiceStub) -> None:
    headers = {f"h{i}": "v" for i in range(33)}
    request = pb.SubmitRequest(task="tasks.add", options=pb.SubmitOptions(headers=headers))
    assert violated_fields(call_error(lambda: stub.Submit(request, timeout=10))) == [
        "options.headers"
    ]


@pytest.mark.limits(TASKGATE_MAX_MESSAGE_BYTES="65536")
def test_a_message_over_the_receive_limit_is_resource_exhausted(limited: Gateway) -> None:
    with grpc.insecure_channel(limited.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        request = pb.SubmitRequest(task="tasks.add", args_json=json.dumps(["x" * 70_000]))
        error = call_error(lambda: stub.Submit(request, timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Submit(pb.SubmitRequest(task="tasks.add", args_json="[1, 1]")).task_id


def _retry_delay(error: grpc.RpcError) -> float:
    info = detail(rich_status(error), error_details_pb2.RetryInfo)
    return float(info.retry_delay.ToTimedelta().total_seconds())


async def _fill_then_call(address: str, slots: int) -> tuple[grpc.aio.AioRpcError, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        task_id = (await stub.Submit(pb.SubmitRequest(task="tasks.sleep", args_json="[3]"))).task_id
        wait = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=10))
        waiting = [asyncio.ensure_future(stub.GetResult(wait, timeout=20)) for _ in range(slots)]
        await asyncio.sleep(0.5)  # let the waits arrive; none can finish before the task does
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=10)
        elapsed = time.monotonic() - started
        results = await asyncio.gather(*waiting)
        assert all(result.ready for result in results)
        await stub.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=10)
        return refused.value, elapsed


@pytest.mark.limits(TASKGATE_MAX_CONCURRENT_CALLS="5", TASKGATE_MAX_CALLS_PER_CALLER="5")
def test_calls_past_the_concurrency_limit_are_refused_at_once(limited: Gateway) -> None:
    error, elapsed = asyncio.run(_fill_then_call(limited.address, slots=5))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert elapsed < 1.0
    assert _retry_delay(error) > 0


@pytest.mark.limits(TASKGATE_RATE_LIMIT="2", TASKGATE_RATE_BURST="3")
def test_a_caller_over_its_rate_is_told_when_to_retry(limited: Gateway) -> None:
    with grpc.insecure_channel(limited.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        request = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]")
        for _ in range(3):
            stub.Submit(request, timeout=10)
        error = call_error(lambda: stub.Submit(request, timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        delay = _retry_delay(error)
        assert 0 < delay <= 0.5
        time.sleep(delay)
        assert stub.Submit(request, timeout=10).task_id
