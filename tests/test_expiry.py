"""Results expire after `result_expires`; the gateway then says so instead of PENDING."""

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.stack import Gateway, RedisServer, celery_env, start_worker, with_config_module
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error

RESULT_EXPIRES = 2


@pytest.fixture(scope="module")
def short_lived(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[pb_grpc.TaskServiceStub]:
    """A worker and a gateway that keep results for two seconds."""
    tmp_path = tmp_path_factory.mktemp("expiry")
    # Database 4: the session's worker (results kept a day) must not take these tasks.
    env = with_config_module(
        celery_env(redis_server.db_url(4), redis_server.db_url(4)),
        tmp_path,
        "shortresults",
        f"result_expires = {RESULT_EXPIRES}",
    )
    worker = start_worker(env, tmp_path)
    gateway = Gateway(env, tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            yield pb_grpc.TaskServiceStub(channel)
    finally:
        gateway.stop()
        worker.stop()


def test_an_expired_result_is_not_found_saying_it_expired(
    short_lived: pb_grpc.TaskServiceStub,
) -> None:
    task_id = short_lived.Submit(pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")).task_id
    request = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=10))
    assert short_lived.GetResult(request, timeout=20).result_json == "3"
    status_request = pb.GetStatusRequest(task_id=task_id)
    deadline = time.monotonic() + RESULT_EXPIRES + 10
    while _still_found(short_lived, status_request):
        assert time.monotonic() < deadline, "the result never expired"
        time.sleep(0.2)
    for call in (
        lambda: short_lived.GetStatus(status_request, timeout=5),
        lambda: short_lived.GetResult(request, timeout=20),
    ):
        error = call_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "expired" in (error.details() or "")


def _still_found(stub: pb_grpc.TaskServiceStub, request: pb.GetStatusRequest) -> bool:
    try:
        stub.GetStatus(request, timeout=5)
    except grpc.RpcError:
        return False
    return True


def test_a_task_waiting_past_result_expires_is_still_pending(
    short_lived: pb_grpc.TaskServiceStub,
) -> None:
    options = pb.SubmitOptions(countdown=Duration(seconds=60))
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]", options=options)
    task_id = short_lived.Submit(request).task_id
    # Long enough for a stored result to have expired, had there been one.
    get = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=RESULT_EXPIRES + 1))
    response = short_lived.GetResult(get, timeout=20)
    assert (response.ready, response.state) == (False, pb.TASK_STATE_PENDING)
    status = short_lived.GetStatus(pb.GetStatusRequest(task_id=task_id), timeout=5)
    assert status.state == pb.TASK_STATE_PENDING
    short_lived.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
