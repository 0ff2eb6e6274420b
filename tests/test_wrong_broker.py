"""A broker that refuses or cannot be reached at start: a logged degraded start, readiness
NOT_SERVING, UNAVAILABLE (never INTERNAL) for calls, and a background loop that goes on.

RabbitMQ is the machine's (127.0.0.1:5672, guest/guest), with a private vhost.
"""

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.stack import Gateway, RedisServer, celery_env, free_port
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import poll
from tests.grpc_helpers import call_error
from tests.rabbitmq_helpers import private_vhost, rabbitmqctl

READINESS = "taskgate.v1.TaskService"
ADD = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")


def health(channel: grpc.Channel, service: str) -> int:
    """The health status the gateway reports for `service` ("" is liveness)."""
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types lack Check
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    return status


def assert_degraded(gateway: Gateway, refusal: str) -> None:
    """Live, not ready, the refusal in the log, and every call UNAVAILABLE."""
    log = gateway.log_text()
    assert re.search(rf"ERROR .*degraded start: broker .*{refusal}", log), log
    with grpc.insecure_channel(gateway.address) as channel:
        assert health(channel, "") == health_pb2.HealthCheckResponse.SERVING
        assert health(channel, READINESS) == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = pb_grpc.TaskServiceStub(channel)
        submitted = call_error(lambda: stub.Submit(ADD, timeout=10))
        assert submitted.code() == grpc.StatusCode.UNAVAILABLE, submitted.details()
        assert refusal in (submitted.details() or "")
        listed = call_error(lambda: stub.ListTasks(pb.ListTasksRequest(), timeout=10))
        assert listed.code() == grpc.StatusCode.UNAVAILABLE, listed.details()
    assert "unexpected error" not in gateway.log_text()


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    yield from private_vhost()


def _gateway(broker: str, redis_server: RedisServer, log_dir: Path) -> Gateway:
    env = celery_env(broker, redis_server.db_url(3), TASKGATE_WORKERS_REFRESH="0.5")
    return Gateway(env, log_dir)


@pytest.mark.parametrize(
    ("credentials", "refusal"),
    [("guest:wrong", "ACCESS_REFUSED"), ("guest:guest", "NOT_ALLOWED")],
    ids=["wrong password", "unknown vhost"],
)
def test_a_refusing_rabbitmq_is_a_degraded_start_and_unavailable(
    vhost: str, redis_server: RedisServer, tmp_path: Path, credentials: str, refusal: str
) -> None:
    name = vhost if refusal == "ACCESS_REFUSED" else f"{vhost}-absent"
    gateway = _gateway(f"pyamqp://{credentials}@127.0.0.1:5672/{name}", redis_server, tmp_path)
    try:
        assert_degraded(gateway, refusal)
        # The worker-registry loop goes on asking (it died on the first refusal before).
        asked = "could not ask the workers what they serve"
        poll(lambda: gateway.log_text().count(asked) >= 3, "the registry loop asking again")
        assert gateway.alive()
    finally:
        gateway.stop()


def test_a_vhost_created_later_makes_the_gateway_ready(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("RabbitMQ is not installed here")
    name = f"taskgate-test-late-{uuid.uuid4().hex[:8]}"
    gateway = _gateway(f"pyamqp://guest:guest@127.0.0.1:5672/{name}", redis_server, tmp_path)
    try:
        assert_degraded(gateway, "NOT_ALLOWED")
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        with grpc.insecure_channel(gateway.address) as channel:
            ready = health_pb2.HealthCheckResponse.SERVING
            poll(lambda: health(channel, READINESS) == ready, "readiness SERVING", timeout=30)
            pb_grpc.TaskServiceStub(channel).Submit(ADD, timeout=10)
        queued = rabbitmqctl("list_queues", "-p", name, "name", "messages")
        assert re.search(r"^celery\s+1$", queued, re.MULTILINE), queued
    finally:
        gateway.stop()
        rabbitmqctl("delete_vhost", name)


def test_a_redis_broker_that_comes_up_later_makes_the_gateway_ready(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    gateway = Gateway(celery_env(broker, redis_server.db_url(4)), tmp_path)
    late: RedisServer | None = None
    try:
        assert_degraded(gateway, "Connection refused")
        late = RedisServer(tmp_path, port=port)
        with grpc.insecure_channel(gateway.address) as channel:
            ready = health_pb2.HealthCheckResponse.SERVING
            poll(lambda: health(channel, READINESS) == ready, "readiness SERVING", timeout=30)
            pb_grpc.TaskServiceStub(channel).Submit(ADD, timeout=10)
        with late.client() as client:
            assert client.llen("celery") == 1
    finally:
        gateway.stop()
        if late is not None:
            late.stop()
