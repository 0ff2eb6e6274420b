"""Readiness and queue length with RabbitMQ as the broker (the machine's, a private vhost).

No worker consumes, so what the gateway queues stays queued.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.stack import Gateway, RedisServer, celery_env
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import poll
from tests.metrics_helpers import scrape, value
from tests.rabbitmq_helpers import private_vhost, rabbitmqctl

READINESS = "taskgate.v1.TaskService"


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    yield from private_vhost()


@pytest.fixture(scope="module")
def gateway(vhost: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    log_dir: Path = tmp_path_factory.mktemp("rabbitmq-operating")
    redis = RedisServer(log_dir)
    broker = f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    env = celery_env(broker, redis.url, TASKGATE_READINESS_INTERVAL="0.5")
    process = Gateway(env, log_dir)
    yield process, vhost
    process.stop()
    redis.stop()


def _readiness(channel: grpc.Channel) -> int:
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types lack Check
    request = health_pb2.HealthCheckRequest(service=READINESS)
    status: int = stub.Check(request, timeout=5).status
    return status


def test_queue_length_is_read_with_a_passive_declare(gateway: tuple[Gateway, str]) -> None:
    process, _ = gateway
    assert process.metrics_url
    url = process.metrics_url
    with grpc.insecure_channel(process.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        for priority in (0, 5, 9):
            options = pb.SubmitOptions(priority=priority)
            stub.Submit(pb.SubmitRequest(task="tasks.add", options=options), timeout=10)
    poll(
        lambda: value(scrape(url), "celery_queue_length", queue_name="celery") == 3,
        "celery_queue_length == 3",
        timeout=15,
    )


def test_readiness_follows_a_vhost_that_goes_and_comes_back(
    gateway: tuple[Gateway, str],
) -> None:
    process, vhost = gateway
    serving = health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(process.address) as channel:
        assert _readiness(channel) == serving
        rabbitmqctl("delete_vhost", vhost)
        try:
            poll(lambda: _readiness(channel) != serving, "readiness NOT_SERVING", timeout=15)
        finally:
            rabbitmqctl("add_vhost", vhost)
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        poll(lambda: _readiness(channel) == serving, "readiness SERVING again", timeout=15)
