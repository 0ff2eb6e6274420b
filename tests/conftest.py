"""A real stack for the tests: a private redis-server, a Celery worker and a gateway.

Started once per test session on free loopback ports; nothing here is a mock.
"""

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, ManagedProcess, RedisServer, celery_env, start_worker
from taskgate.v1 import task_service_pb2_grpc as pb_grpc


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's processes keep their logs and files."""
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def redis_server(stack_dir: Path) -> Iterator[RedisServer]:
    """A private redis-server: the broker and the result backend."""
    server = RedisServer(stack_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack_env(redis_server: RedisServer) -> dict[str, str]:
    """The environment shared by the session's worker and gateway."""
    return celery_env(redis_server.url, redis_server.url)


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], stack_dir: Path) -> Iterator[ManagedProcess]:
    """A Celery worker running the bundled example tasks."""
    process = start_worker(stack_env, stack_dir)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def gateway(
    stack_env: dict[str, str], stack_dir: Path, worker: ManagedProcess
) -> Iterator[Gateway]:
    """`python -m taskgate.server` on a free loopback port."""
    process = Gateway(stack_env, stack_dir)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def channel(gateway: Gateway) -> Iterator[grpc.Channel]:
    """A plaintext channel to the session's gateway."""
    with grpc.insecure_channel(gateway.address) as chan:
        yield chan


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> pb_grpc.TaskServiceStub:
    """A TaskService client."""
    return pb_grpc.TaskServiceStub(channel)
