"""A broker or result backend that cannot be reached: UNAVAILABLE, within the deadline."""

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

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
