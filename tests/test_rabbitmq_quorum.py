"""RabbitMQ quorum queues as the broker: one Celery setting, nothing else changes for callers.

`task_default_queue_type = "quorum"` in the configuration module makes the gateway
and the workers declare the default queue as a quorum queue (replicated with Raft;
a publisher confirm comes once a majority of nodes has the message), and with a
topic exchange a countdown waits in RabbitMQ's delayed queues (Celery's native
delayed delivery), not in a worker. The machine's RabbitMQ is one node, so this
proves the wiring, not the replication.
"""

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, ManagedProcess, RedisServer, start_worker, with_config_module
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import await_result, fault_env, seconds
from tests.rabbitmq_helpers import private_vhost, rabbitmqctl

# A topic exchange: Celery's native delayed delivery (countdown, eta) refuses a direct one.
QUORUM_CONFIG = """
task_default_queue_type = "quorum"
task_default_exchange_type = "topic"
"""


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    yield from private_vhost()


@pytest.fixture(scope="module")
def stub(
    vhost: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pb_grpc.TaskServiceStub]:
    log_dir: Path = tmp_path_factory.mktemp("rabbitmq-quorum")
    broker = f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    env = with_config_module(
        fault_env(broker, redis_server.db_url(5)), log_dir, "quorum_celeryconfig", QUORUM_CONFIG
    )
    processes: list[ManagedProcess] = [start_worker(env, log_dir)]
    try:
        gateway = Gateway(env, log_dir)
        processes.append(gateway)
        with grpc.insecure_channel(gateway.address) as channel:
            yield pb_grpc.TaskServiceStub(channel)
    finally:
        for process in reversed(processes):
            process.stop()


def test_tasks_run_through_a_quorum_queue(vhost: str, stub: pb_grpc.TaskServiceStub) -> None:
    now = stub.Submit(pb.SubmitRequest(task="tasks.add", args_json="[2, 3]"), timeout=10)
    later = stub.Submit(
        pb.SubmitRequest(
            task="tasks.add", args_json="[4, 5]", options=pb.SubmitOptions(countdown=seconds(1))
        ),
        timeout=10,
    )
    assert await_result(stub, now.task_id).result_json == "5"
    assert await_result(stub, later.task_id).result_json == "9"
    queues = rabbitmqctl("list_queues", "-p", vhost, "name", "type", "--no-table-headers")
    assert "celery\tquorum" in queues, queues
    assert "celery_delayed_0\tquorum" in queues, queues  # countdowns wait in RabbitMQ
