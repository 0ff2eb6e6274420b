"""Duplicate messages of one task id run the task once (worker/guard.py).

A duplicate is what a retried publish, a takeover of a stale idempotency claim or
kombu's own publish retry leaves in the broker: a second message with the same
task id and its own delivery tag, not flagged redelivered. The tests make exactly
that message by copying a queued one, then count the runs with the task itself.
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import await_result, fault_env, managed, request, runs, unique
from tests.lifecycle_helpers import count_in_log

SKIPPED = "skipping a duplicate message"


@dataclass
class Stack:
    """A private Redis and gateway; each test starts its own worker on its own queue."""

    redis: RedisServer
    env: dict[str, str]
    log_dir: Path
    stub: pb_grpc.TaskServiceStub

    def submit_to(self, queue: str, task: str, *args: object) -> str:
        """Submit `task(*args)` to `queue`; its task id."""
        submission = request(task, *args)
        submission.options.queue = queue
        return self.stub.Submit(submission, timeout=10).task_id

    def duplicate_queued(self, queue: str, copies: int = 1) -> None:
        """Push `copies` more copies of the one message queued on `queue`, each with its
        own delivery tag, as a second publish of the same task id makes them."""
        with self.redis.client() as client:
            [raw] = client.lrange(queue, 0, -1)
            for _ in range(copies):
                message = json.loads(raw)
                message["properties"]["delivery_tag"] = str(uuid.uuid4())
                client.lpush(queue, json.dumps(message))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis and a gateway; no worker."""
    log_dir = tmp_path_factory.mktemp("duplicates")
    with managed(RedisServer(log_dir)) as redis_server:
        env = fault_env(redis_server.url, redis_server.url)
        with (
            managed(Gateway(env, log_dir)) as gateway,
            grpc.insecure_channel(gateway.address) as channel,
        ):
            yield Stack(redis_server, env, log_dir, pb_grpc.TaskServiceStub(channel))


def test_copies_of_a_message_run_the_task_once(stack: Stack) -> None:
    """Three copies of one task's message, taken by two pool processes at once (the
    first run holds for a second): the task runs once, every copy is acknowledged,
    and the stored result is the first run's. Without the guard it runs three times."""
    queue, key = unique("dup-"), unique()
    task_id = stack.submit_to(queue, "tests.faults.hold", key, 1)
    stack.duplicate_queued(queue, copies=2)
    with managed(start_worker(stack.env, stack.log_dir, queues=queue)) as worker:
        assert await_result(stack.stub, task_id).result_json == "1"
        behind = stack.submit_to(queue, "tests.count_run", unique())
        assert await_result(stack.stub, behind).result_json == "1"
        assert count_in_log(worker, SKIPPED) == 2
    with stack.redis.client() as client:
        assert runs(client, key) == 1
        assert client.llen(queue) == 0
        assert client.hlen("unacked") == 0  # the skipped copies were acknowledged
    reply = stack.stub.GetResult(pb.GetResultRequest(task_id=task_id), timeout=5)
    assert (pb.TaskState.Name(reply.state), reply.result_json) == ("TASK_STATE_SUCCESS", "1")


def test_a_copy_of_a_failed_task_does_not_run_it_again(stack: Stack) -> None:
    """A copy that arrives after the task failed is skipped, even marked redelivered:
    the failure stays the task's answer (Celery's own dedup covers only SUCCESS)."""
    queue = unique("dup-failed-")
    task_id = stack.submit_to(queue, "tasks.fail", "once")
    with stack.redis.client() as client:
        [raw] = client.lrange(queue, 0, -1)
    with managed(start_worker(stack.env, stack.log_dir, queues=queue)) as worker:
        assert await_result(stack.stub, task_id).error.message == "once"
        message = json.loads(raw)
        message["properties"]["delivery_tag"] = str(uuid.uuid4())
        message["properties"]["delivery_info"]["redelivered"] = True
        with stack.redis.client() as client:
            client.lpush(queue, json.dumps(message))
        behind = stack.submit_to(queue, "tests.count_run", unique())
        assert await_result(stack.stub, behind).result_json == "1"
        assert count_in_log(worker, SKIPPED) == 1
        assert count_in_log(worker, "ValueError: once") == 1


def test_retries_of_a_task_still_run(stack: Stack) -> None:
    """`self.retry()` republishes the same task id: each retry is a new run, not a copy."""
    queue = unique("dup-retry-")
    task_id = stack.submit_to(queue, "tasks.retry", 2, 0.1)
    with managed(start_worker(stack.env, stack.log_dir, queues=queue)) as worker:
        assert await_result(stack.stub, task_id).result_json == "2"
        assert count_in_log(worker, SKIPPED) == 0
