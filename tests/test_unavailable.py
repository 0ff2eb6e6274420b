"""A broker or result backend that cannot be reached: UNAVAILABLE, within the deadline."""

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.rpc import code_pb2

from scripts.stack import Gateway, RedisServer, celery_env, free_port
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error

DEADLINE = 5.0


def _stub_for(env: dict[str, str], log_dir: Path) -> Iterator[pb_grpc.TaskServiceStub]:
    gateway = Gateway(env, log_dir)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            yield pb_grpc.TaskServiceStub(channel)
    finally:
        gateway.stop()


@pytest.fixture
def nothing_reachable(tmp_path: Path) -> Iterator[pb_grpc.TaskServiceStub]:
    """A gateway whose broker and backend port has nothing listening."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    yield from _stub_for(celery_env(dead, dead), tmp_path)


@pytest.fixture
def broker_down(tmp_path: Path, redis_server: RedisServer) -> Iterator[pb_grpc.TaskServiceStub]:
    """A gateway with a working result backend and a broker that is down."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    yield from _stub_for(celery_env(dead, redis_server.url), tmp_path)


def assert_unavailable_in_time(call: Callable[..., object], request: object) -> None:
    """The call fails UNAVAILABLE, and well before its deadline."""
    started = time.monotonic()
    error = call_error(lambda: call(request, timeout=DEADLINE))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "unavailable" in (error.details() or "")
    assert time.monotonic() - started < DEADLINE


def test_submit_without_any_redis_is_unavailable(
    nothing_reachable: pb_grpc.TaskServiceStub,
) -> None:
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
    assert_unavailable_in_time(nothing_reachable.Submit, request)


def test_reads_without_the_backend_are_unavailable(
    nothing_reachable: pb_grpc.TaskServiceStub,
) -> None:
    task_id = str(uuid.uuid4())
    assert_unavailable_in_time(nothing_reachable.GetStatus, pb.GetStatusRequest(task_id=task_id))
    assert_unavailable_in_time(nothing_reachable.GetResult, pb.GetResultRequest(task_id=task_id))


def test_submit_with_the_broker_down_is_unavailable(broker_down: pb_grpc.TaskServiceStub) -> None:
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
    assert_unavailable_in_time(broker_down.Submit, request)
    assert "broker" in (
        call_error(lambda: broker_down.Submit(request, timeout=DEADLINE)).details() or ""
    )


def test_a_batch_with_the_broker_down_answers_each_item_unavailable(
    broker_down: pb_grpc.TaskServiceStub,
) -> None:
    """The call itself succeeds; each item carries its own UNAVAILABLE, in time."""
    batch = pb.SubmitBatchRequest(
        requests=[pb.SubmitRequest(task="tasks.add", args_json=f"[{i}, 1]") for i in range(5)]
    )
    started = time.monotonic()
    results = broker_down.SubmitBatch(batch, timeout=DEADLINE).results
    assert time.monotonic() - started < DEADLINE
    assert [result.WhichOneof("outcome") for result in results] == ["error"] * 5
    assert {result.error.code for result in results} == {code_pb2.UNAVAILABLE}
    assert "broker" in results[0].error.message


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[pb_grpc.TaskServiceStub, RedisServer]]:
    """A gateway whose one Redis has become a read-only replica (a demoted primary)."""
    server = RedisServer(tmp_path)
    try:
        with redis.Redis.from_url(server.url) as client:
            client.replicaof("127.0.0.1", free_port())  # nothing there: stays read-only
        for stub in _stub_for(celery_env(server.url, server.url), tmp_path):
            yield stub, server
    finally:
        server.stop()


def test_submit_to_a_broker_that_refuses_writes_is_unavailable(
    read_only: tuple[pb_grpc.TaskServiceStub, RedisServer],
) -> None:
    """Worth a retry elsewhere or later (UNAVAILABLE), not a gateway bug (INTERNAL)."""
    stub, server = read_only
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
    started = time.monotonic()
    error = call_error(lambda: stub.Submit(request, timeout=DEADLINE))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "refuses writes" in (error.details() or "")
    assert time.monotonic() - started < DEADLINE
    with redis.Redis.from_url(server.url) as client:
        assert client.llen("celery") == 0


def test_a_gateway_whose_broker_is_down_stops_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Its background ask of the workers hangs in kombu's connection retries; that must
    not hold up the exit once the calls have drained (it held it 5.5 s)."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gateway = Gateway(celery_env(dead, redis_server.url), tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
            assert_unavailable_in_time(pb_grpc.TaskServiceStub(channel).Submit, request)
    finally:
        started = time.monotonic()
        assert gateway.stop() == 0
    assert time.monotonic() - started < 4.0, "no call was in flight: nothing to wait for"
