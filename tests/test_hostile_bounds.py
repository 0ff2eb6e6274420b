"""Hostile callers against a real gateway: it stays responsive, and what they hold is bounded.

Each test watches what an operator or another caller would see while the attack
runs: a probe Submitting every 100 ms (tests.bounds_helpers.Probe), the gateway's
memory (VmRSS) and open files, and the statuses the attacker gets.
(a) Connections: see test_hostile_connections.py.
(b) A flood of requests that can never be valid costs bounded memory.
(c) WatchStatus streams whose client does not read are ended.
(d) One token at its concurrency limit leaves the others served.
"""

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from redis.asyncio import Redis as AsyncRedis

from scripts.stack import ManagedProcess, RedisServer
from taskgate.server.auth import digest
from taskgate.server.codec import MAX_JSON_BYTES
from taskgate.server.sizes import SMALL_REQUEST_BYTES
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.bounds_helpers import PROBE_DEADLINE, Probe, flood, own_gateway, rss_mb
from tests.grpc_helpers import call_error, detail, rich_status


def _tokens(path: Path) -> Path:
    entries = [
        {"name": name, "sha256": digest(f"{name}-token").hex(), "tasks": ["*"]}
        for name in ("greedy", "other")
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


def _as(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {name}-token"),)


# --- (b) a flood of requests that can never be valid --------------------------------

FLOOD_CALLS = 200
FLOOD_SECONDS = 8.0
# Measured: about 230 MiB with the bounds (8 of one caller's requests read at once,
# a few copies of each), 1.0 to 1.9 GiB without them.
RSS_BOUND_MB = 800


def test_a_flood_of_oversized_requests_takes_bounded_memory(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path: Path
) -> None:
    tokens = str(_tokens(tmp_path / "tokens.json"))
    gateway = own_gateway(stack_env, tmp_path, TASKGATE_TOKENS_FILE=tokens)
    pid = gateway.popen.pid
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    # Just under the 4 MiB message limit; args_json alone is over its 1 MiB limit.
    request = pb.SubmitRequest(task="tasks.add", args_json=json.dumps(["x" * 4_000_000]))
    try:
        sampler.start()
        with Probe(gateway.address, _as("other")) as probe:
            codes = flood(gateway.address, request, FLOOD_CALLS, FLOOD_SECONDS, _as("greedy"))
        done.set()
        sampler.join()
        print(
            f"{len(codes)} oversized Submits refused; gateway peak {peak[0]:.0f} MiB; "
            f"probe median {probe.median_ms():.0f} ms over {len(probe.latencies)} calls"
        )
        assert probe.failures == [], f"the probe missed its {PROBE_DEADLINE}s deadline"
        assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
        assert peak[0] < RSS_BOUND_MB, f"the gateway grew to {peak[0]:.0f} MiB"
    finally:
        done.set()
        gateway.stop()


# --- (c) streams whose client does not read -------------------------------------------

STREAMS = 20
META_BYTES = 1_000_000
WRITE_TIMEOUT = 2.0


async def _publish_progress(redis: AsyncRedis, task_id: str, step: int) -> None:
    """Store and publish a PROGRESS state with a large meta, as a worker's update_state does."""
    key = f"celery-task-meta-{task_id}"
    meta = {"step": step, "blob": "m" * META_BYTES}
    payload = json.dumps({"status": "PROGRESS", "result": meta, "task_id": task_id})
    await redis.set(key, payload, ex=600)
    await redis.publish(key, payload)


async def _numsub(redis: AsyncRedis, task_id: str) -> int:
    counts = await redis.pubsub_numsub(f"celery-task-meta-{task_id}")
    return int(counts[0][1])


async def _unread_streams(address: str, redis_url: str, task_id: str, pid: int) -> float:
    """Open streams never read past their first message, feed them; seconds until dropped."""
    # No BDP probing: the client's window stays small, as a client that stops reading.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 8 << 20)]
    redis = AsyncRedis.from_url(redis_url)
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        calls = [stub.WatchStatus(pb.WatchStatusRequest(task_id=task_id)) for _ in range(STREAMS)]
        for call in calls:
            await call.read()  # PENDING: the stream is open and subscribed
        before = rss_mb(pid)
        for step in range(10):
            await _publish_progress(redis, task_id, step)
        started = time.monotonic()
        peak = before
        while await _numsub(redis, task_id) > 0:
            peak = max(peak, rss_mb(pid))
            held = f"{peak - before:.0f} MiB more, {(peak - before) / STREAMS:.1f} per stream"
            assert time.monotonic() - started < 20, f"unread streams still held after 20s ({held})"
            await asyncio.sleep(0.1)
        print(f"while held, the gateway grew by at most {held}")
        codes = set()
        for call in calls:
            with contextlib.suppress(grpc.aio.AioRpcError):
                while await call.read() is not grpc.aio.EOF:
                    pass
            codes.add(await call.code())
        assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    await redis.aclose()
    return time.monotonic() - started


def test_streams_whose_client_does_not_read_are_ended(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path: Path, redis_server: RedisServer
) -> None:
    gateway = own_gateway(stack_env, tmp_path, TASKGATE_STREAM_WRITE_TIMEOUT=str(WRITE_TIMEOUT))
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            far = pb.SubmitOptions(countdown=Duration(seconds=3600))
            task_id = stub.Submit(pb.SubmitRequest(task="tasks.add", options=far)).task_id
            seconds = asyncio.run(
                _unread_streams(gateway.address, redis_server.url, task_id, gateway.popen.pid)
            )
            print(f"{STREAMS} unread streams ended {seconds:.1f}s after the states came")
            stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
    finally:
        gateway.stop()


# --- (d) one token at its concurrency limit ----------------------------------------------

PER_CALLER = 5


async def _hold_limit(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        submit = pb.SubmitRequest(task="tasks.sleep", args_json="[2]")
        task_id = (await stub.Submit(submit, metadata=_as("greedy"))).task_id
        wait = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=10))
        held = [
            asyncio.ensure_future(stub.GetResult(wait, timeout=20, metadata=_as("greedy")))
            for _ in range(PER_CALLER)
        ]
        await asyncio.sleep(0.5)  # the waits arrive; none can end before the task does
        status = pb.GetStatusRequest(task_id=task_id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetStatus(status, timeout=5, metadata=_as("greedy"))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with grpc.insecure_channel(address) as other_channel:
            others = pb_grpc.TaskServiceStub(other_channel)
            for _ in range(3):
                others.Submit(pb.SubmitRequest(task="tasks.add"), timeout=5, metadata=_as("other"))
        assert all(result.ready for result in await asyncio.gather(*held))
        await stub.GetStatus(status, timeout=5, metadata=_as("greedy"))  # its slots came back
        error = refused.value
        info = detail(rich_status(error), error_details_pb2.RetryInfo)
        assert info.retry_delay.ToTimedelta().total_seconds() > 0
        quota = detail(rich_status(error), error_details_pb2.QuotaFailure)
        assert quota.violations[0].subject == "caller:greedy:concurrent-calls"


def test_one_token_at_its_limit_leaves_the_others_served(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path: Path
) -> None:
    gateway = own_gateway(
        stack_env,
        tmp_path,
        TASKGATE_TOKENS_FILE=str(_tokens(tmp_path / "tokens.json")),
        TASKGATE_MAX_CONCURRENT_CALLS="20",
        TASKGATE_MAX_CALLS_PER_CALLER=str(PER_CALLER),
    )
    try:
        asyncio.run(_hold_limit(gateway.address))
    finally:
        gateway.stop()


# --- request sizes: the largest valid request passes, anything larger is refused unread ----


def test_the_largest_valid_submit_is_accepted_and_a_larger_get_status_refused(
    stub: pb_grpc.TaskServiceStub,
) -> None:
    text = "x" * (MAX_JSON_BYTES - 4)
    far = pb.SubmitOptions(countdown=Duration(seconds=3600))
    request = pb.SubmitRequest(
        task="tasks.add", args_json=json.dumps([text]), kwargs_json=json.dumps({"k": text[5:]}),
        options=far,
    )  # fmt: skip
    assert request.ByteSize() > 2 * MAX_JSON_BYTES
    task_id = stub.Submit(request, timeout=30).task_id
    stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
    oversized = pb.GetStatusRequest(task_id="x" * (SMALL_REQUEST_BYTES + 1))
    error = call_error(lambda: stub.GetStatus(oversized, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"a valid GetStatus request is at most {SMALL_REQUEST_BYTES}" in (error.details() or "")
