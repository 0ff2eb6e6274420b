"""Readiness follows the broker and the result backend for the gateway's whole life.

The gateway has a Redis of its own (broker and backend) that the tests freeze, stop and
start again; a health Watch stream sees each change. Checks every 0.3 s, 3 failures to
go NOT_SERVING, 2 answers to come back.
"""

import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.stack import Gateway, RedisServer, celery_env
from taskgate.server.observability.readiness import ReadinessPolicy
from tests.fault_helpers import poll

READINESS = "taskgate.v1.TaskService"
POLICY = ReadinessPolicy(interval_seconds=0.3, failures=3, successes=2)
SERVING, NOT_SERVING = "SERVING", "NOT_SERVING"


@dataclass
class Watched:
    """What a health Watch stream said, with the monotonic time of each message."""

    seen: list[tuple[float, str]] = field(default_factory=list)

    def record(self, stream: Iterator[health_pb2.HealthCheckResponse]) -> None:
        try:
            for response in stream:
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                self.seen.append((time.monotonic(), name))
        except grpc.RpcError:
            pass  # the stream ends with the test

    def statuses(self) -> list[str]:
        return [status for _, status in self.seen]

    def last(self) -> str | None:
        return self.seen[-1][1] if self.seen else None


@dataclass
class Stack:
    redis: RedisServer
    gateway: Gateway
    channel: grpc.Channel
    log_dir: Path

    def watch(self, service: str) -> Watched:
        """A Watch stream on `service`, recorded in the background."""
        stub: Any = health_pb2_grpc.HealthStub(self.channel)  # the stubs' types lack Watch
        stream = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=120)
        watched = Watched()
        threading.Thread(target=watched.record, args=(stream,), daemon=True).start()
        poll(lambda: watched.last() == SERVING, f"{service!r} SERVING at first")
        return watched

    def log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.gateway.log_text()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("readiness")
    redis = RedisServer(log_dir)
    env = celery_env(
        redis.url,
        redis.url,
        TASKGATE_METRICS_LISTEN="",
        TASKGATE_READINESS_INTERVAL=str(POLICY.interval_seconds),
        TASKGATE_READINESS_FAILURES=str(POLICY.failures),
        TASKGATE_READINESS_SUCCESSES=str(POLICY.successes),
        # The health watches stay open through the drain: each stop waits the whole grace.
        TASKGATE_GRACE="1",
    )
    gateway = Gateway(env, log_dir)
    with grpc.insecure_channel(gateway.address) as channel:
        made = Stack(redis, gateway, channel, log_dir)
        try:
            yield made
        finally:
            made.gateway.stop()
            made.redis.stop()  # the one a test started again, if it did


def test_readiness_checks_keep_one_broker_connection(stack: Stack) -> None:
    """A check is a round trip on a connection kept from check to check, not a new
    connection each time (which RabbitMQ logs twice a check)."""
    stack.watch(READINESS)
    with stack.redis.client() as client:
        before = client.info("stats")["total_connections_received"]
        time.sleep(20 * POLICY.interval_seconds)  # twenty checks
        opened = client.info("stats")["total_connections_received"] - before - 1  # ours
    assert opened <= 1, f"{opened} connections opened over twenty checks"


def test_one_failed_check_does_not_flip_readiness(stack: Stack) -> None:
    watched = stack.watch(READINESS)
    failed = r"readiness check failed \(1 of 3\)"
    earlier = stack.log_count(failed)
    stack.redis.signal(signal.SIGSTOP)  # a frozen Redis: the check waits out its timeout
    try:
        poll(lambda: stack.log_count(failed) > earlier, "one failed check", timeout=10)
    finally:
        stack.redis.signal(signal.SIGCONT)
    recovered = r"readiness: still SERVING after 1 other answer"
    poll(lambda: stack.log_count(recovered) > 0, "the next check answered")
    assert watched.statuses() == [SERVING], watched.seen


def test_a_stopped_redis_turns_readiness_not_serving_and_back(stack: Stack) -> None:
    readiness = stack.watch(READINESS)
    liveness = stack.watch("")
    port = stack.redis.port
    stopped = time.monotonic()
    stack.redis.stop()
    poll(
        lambda: readiness.last() == NOT_SERVING,
        "readiness NOT_SERVING",
        timeout=POLICY.worst_case_seconds() + 2,
    )
    assert readiness.statuses() == [SERVING, NOT_SERVING]
    # At least three checks failed first: no sooner than two intervals after the stop.
    assert readiness.seen[-1][0] - stopped >= 2 * POLICY.interval_seconds
    stack.redis = RedisServer(stack.log_dir, port=port)
    poll(lambda: readiness.last() == SERVING, "readiness SERVING again", timeout=10)
    assert readiness.statuses() == [SERVING, NOT_SERVING, SERVING]
    assert liveness.statuses() == [SERVING], "liveness must not follow the broker"


def test_draining_turns_both_not_serving(stack: Stack) -> None:
    readiness = stack.watch(READINESS)
    liveness = stack.watch("")
    stack.gateway.signal(signal.SIGTERM)
    poll(lambda: readiness.last() == NOT_SERVING, "readiness NOT_SERVING on SIGTERM")
    poll(lambda: liveness.last() == NOT_SERVING, "liveness NOT_SERVING on SIGTERM")
