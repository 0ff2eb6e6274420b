"""The stack of the tests that kill workers: a private Redis and a gateway, no worker.

Each test starts the workers it kills, with `env` (the safe defaults) or with
`short_visibility_env` (a short visibility timeout, swept every second, and any
other settings the module asks for).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from scripts.stack import Gateway, RedisServer
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import (
    fault_env,
    managed,
    poll,
    quick_redelivery_options,
    run_pids,
    write_config,
)


@dataclass
class WorkerFaultStack:
    """A private Redis and gateway; the environments workers are started with."""

    redis: RedisServer
    env: dict[str, str]
    short_visibility_env: dict[str, str]
    log_dir: Path
    stub: pb_grpc.TaskServiceStub

    def first_run_pid(self, key: str) -> int:
        """The pool process that started tests.faults.hold under `key`, once it has."""
        with self.redis.client() as client:
            poll(lambda: bool(run_pids(client, key)), "the task started")
            return run_pids(client, key)[0]


def worker_fault_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, visibility: float, **settings: Any
) -> Iterator[WorkerFaultStack]:
    """Start Redis and a gateway; `visibility` and `settings` go into the short-visibility
    workers' configuration module."""
    log_dir = tmp_path_factory.mktemp(name)
    config_dir = tmp_path_factory.mktemp(f"{name}-config")
    write_config(
        config_dir, broker_transport_options=quick_redelivery_options(visibility), **settings
    )
    with managed(RedisServer(log_dir)) as redis_server:
        env = fault_env(redis_server.url, redis_server.url)
        with (
            managed(Gateway(env, log_dir)) as gateway,
            grpc.insecure_channel(gateway.address) as channel,
        ):
            yield WorkerFaultStack(
                redis_server,
                env,
                fault_env(redis_server.url, redis_server.url, config_dir),
                log_dir,
                pb_grpc.TaskServiceStub(channel),
            )
