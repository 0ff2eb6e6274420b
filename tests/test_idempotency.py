"""Idempotent Submit: one key and one request run one task, however the calls race."""

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from scripts.stack import (
    REPO_ROOT,
    Gateway,
    ManagedProcess,
    RedisServer,
    celery_env,
    free_port,
    start_worker,
    with_config_module,
)
from taskgate.server.idempotency import Claim, fingerprint
from taskgate.server.requests import parse_submit
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, detail, rich_status
from tests.support_tasks import RUNS_PREFIX

KEY_PREFIX = "taskgate:idempotency:"


@dataclass
class Stack:
    """Two gateways sharing one Redis and one worker that runs the counting task."""

    redis: RedisServer
    env: dict[str, str]
    addresses: list[str]
    stub: pb_grpc.TaskServiceStub


def _env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return celery_env(
        redis_server.url,
        redis_server.url,
        TASKGATE_TASK_MODULES="taskgate.worker.tasks,tests.support_tasks",
        TASKGATE_TASKS="tasks.*,tests.*",
        PYTHONPATH=str(REPO_ROOT),
        **extra,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Redis of its own: no other test's worker may take the counting task."""
    log_dir = tmp_path_factory.mktemp("idempotency")
    redis_server = RedisServer(log_dir)
    env = _env(redis_server)
    processes: list[ManagedProcess] = [redis_server, start_worker(env, log_dir)]
    try:
        gateways = [Gateway(env, log_dir), Gateway(env, log_dir)]
        processes += gateways
        with grpc.insecure_channel(gateways[0].address) as channel:
            yield Stack(
                redis_server, env, [g.address for g in gateways], pb_grpc.TaskServiceStub(channel)
            )
    finally:
        for process in reversed(processes):
            process.stop()


def counting(key: str, idempotency_key: str) -> pb.SubmitRequest:
    return pb.SubmitRequest(
        task="tests.count_run", args_json=f'["{key}"]', idempotency_key=idempotency_key
    )


def runs(stack: Stack, key: str) -> int:
    with stack.redis.client() as client:
        return int(client.get(RUNS_PREFIX + key) or 0)


def wait_done(stub: pb_grpc.TaskServiceStub, task_id: str) -> pb.GetResultResponse:
    request = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=20))
    result = stub.GetResult(request, timeout=30)
    assert result.ready
    return result


def test_a_retried_submit_returns_the_same_task_and_runs_once(stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = stack.stub.Submit(counting(key, key), timeout=10)
    again = stack.stub.Submit(counting(key, key), timeout=10)
    assert (again.task_id, first.deduplicated, again.deduplicated) == (first.task_id, False, True)
    assert wait_done(stack.stub, first.task_id).result_json == "1"
    third = stack.stub.Submit(counting(key, key), timeout=10)
    assert third.task_id == first.task_id
    assert runs(stack, key) == 1


async def _race(
    addresses: list[str], request: pb.SubmitRequest, calls: int
) -> list[pb.SubmitResponse]:
    channels = [grpc.aio.insecure_channel(addresses[i % len(addresses)]) for i in range(10)]
    try:
        stubs = [pb_grpc.TaskServiceStub(channel) for channel in channels]
        return list(
            await asyncio.gather(
                *(stubs[i % len(stubs)].Submit(request, timeout=20) for i in range(calls))
            )
        )
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def test_fifty_racing_calls_through_two_gateways_dispatch_once(stack: Stack) -> None:
    key = uuid.uuid4().hex
    responses = asyncio.run(_race(stack.addresses, counting(key, key), calls=50))
    assert len({response.task_id for response in responses}) == 1
    assert sum(not response.deduplicated for response in responses) == 1
    wait_done(stack.stub, responses[0].task_id)
    assert runs(stack, key) == 1


def test_the_same_key_for_another_request_is_already_exists(stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = stack.stub.Submit(counting(key, key), timeout=10)
    other = counting("something-else", key)
    error = call_error(lambda: stack.stub.Submit(other, timeout=10))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info = detail(rich_status(error), error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["task_id"]) == ("IDEMPOTENCY_KEY_REUSED", first.task_id)
    changed_options = counting(key, key)
    changed_options.options.priority = 5
    error = call_error(lambda: stack.stub.Submit(changed_options, timeout=10))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_claim_left_by_a_dead_gateway_is_published_under_its_id(stack: Stack) -> None:
    key = uuid.uuid4().hex
    request = counting(key, key)
    orphan = Claim(str(uuid.uuid4()), fingerprint(parse_submit(request)), time.time() - 3600)
    with stack.redis.client() as client:
        client.set(KEY_PREFIX + key, orphan.encode(), ex=600)
    response = stack.stub.Submit(request, timeout=10)
    assert (response.task_id, response.deduplicated) == (orphan.task_id, True)
    assert wait_done(stack.stub, orphan.task_id).result_json == "1"


def test_a_failed_publish_keeps_the_key_on_its_task_id_for_the_retry(
    stack: Stack, tmp_path: Path
) -> None:
    """A publish that failed may still have reached a broker (a timeout is not a
    refusal), so the key keeps its task id, released: the retry publishes that same
    id at once, never a second task id, and the task runs once."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    env = {**stack.env, "CELERY_BROKER_URL": dead_broker}
    gateway = Gateway(env, tmp_path)
    key = uuid.uuid4().hex
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            broken = pb_grpc.TaskServiceStub(channel)
            error = call_error(lambda: broken.Submit(counting(key, key), timeout=10))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        gateway.stop()
    with stack.redis.client() as client:
        held = Claim.decode(client.get(KEY_PREFIX + key))
    assert (held.published, held.lapsed(time.time())) == (False, True)
    # Its id was never queued: NOT_FOUND, not PENDING for ever (the ALREADY_EXISTS of
    # another request with this key names it).
    never = call_error(
        lambda: stack.stub.GetStatus(pb.GetStatusRequest(task_id=held.task_id), timeout=5)
    )
    assert never.code() == grpc.StatusCode.NOT_FOUND
    # Had the key stayed leased to the failed call, this retry would wait out its deadline.
    retried = stack.stub.Submit(counting(key, key), timeout=10)
    assert retried.task_id == held.task_id
    assert wait_done(stack.stub, retried.task_id).result_json == "1"
    assert runs(stack, key) == 1


def test_a_key_is_free_again_after_the_retention_window(stack: Stack, tmp_path: Path) -> None:
    env = with_config_module(stack.env, tmp_path, "shortretention", "result_expires = 1")
    gateway = Gateway(env, tmp_path)
    key = uuid.uuid4().hex
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            short = pb_grpc.TaskServiceStub(channel)
            first = short.Submit(counting(key, key), timeout=10)
            with stack.redis.client() as client:
                assert 0 < client.ttl(KEY_PREFIX + key) <= 1
            deadline = time.monotonic() + 10
            while (again := short.Submit(counting(key, key), timeout=10)).deduplicated:
                assert time.monotonic() < deadline, "the key was never freed"
                time.sleep(0.2)
            assert again.task_id != first.task_id
    finally:
        gateway.stop()


def test_a_retention_shorter_than_results_is_refused(stack: Stack, tmp_path: Path) -> None:
    env = {**stack.env, "TASKGATE_IDEMPOTENCY_RETENTION": "60"}
    process = ManagedProcess(
        "short-retention", [sys.executable, "-m", "taskgate.server"], env, tmp_path
    )
    assert process.popen.wait(timeout=30) != 0
    assert "shorter than result_expires" in process.log_text()
    process.stop()
