"""The reclaimer gives back a message a worker popped but never received, and only that.

A real redis-server, gateway and worker; the test itself plays the worker whose reply
was lost: it BRPOPs a message and throws it away, the state a cut-off host leaves.
"""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis

from scripts.stack import Gateway, ManagedProcess, RedisServer, start_worker
from taskgate.server.config import ReclaimSettings
from taskgate.server.env import SettingsError
from taskgate.server.publish.inflight import InflightKeys
from taskgate.server.publish.reclaim import MAX_RECLAIMS
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import await_result, fault_env, managed, poll, runs, seconds, unique
from tests.metrics_helpers import metrics_url, scrape, value
from tests.reclaim_helpers import (
    GRACE,
    RECLAIM_BOUND,
    RECLAIMED_LINE,
    looked_at_twice,
    sweeping,
)

BATCH = 3  # fewer than the backlog: a sweep looks for 3 messages in the lists at most
LOST_QUEUE = "reclaim-lost"  # consumed by the worker, started once the message is lost
BACKLOG_QUEUE = "reclaim-backlog"  # consumed by no one
BEHIND_QUEUE = "reclaim-behind"  # consumed by no one
RESTORED_QUEUE = "reclaim-restored"  # consumed by a worker that then stops
VOID_QUEUE = "reclaim-void"  # emptied by the test each time
KEYS = InflightKeys()


@dataclass
class ReclaimStack:
    """A private Redis and a gateway that sweeps often; the worker comes later."""

    redis: RedisServer
    gateway: Gateway
    env: dict[str, str]
    log_dir: Path
    stub: pb_grpc.TaskServiceStub

    def reclaimed(self, task_id: str) -> bool:
        """True when the gateway logged queueing `task_id` again."""
        return bool(re.search(rf"task {task_id} .*{RECLAIMED_LINE}", self.gateway.log_text()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReclaimStack]:
    log_dir = tmp_path_factory.mktemp("reclaim")
    with managed(RedisServer(log_dir)) as redis_server:
        env = fault_env(redis_server.url, redis_server.url)
        gateway_env = {**sweeping(env), "TASKGATE_RECLAIM_BATCH": str(BATCH)}
        with (
            managed(Gateway(gateway_env, log_dir)) as gateway,
            grpc.insecure_channel(gateway.address) as channel,
        ):
            yield ReclaimStack(
                redis_server, gateway, env, log_dir, pb_grpc.TaskServiceStub(channel)
            )


@pytest.fixture(scope="module")
def worker(stack: ReclaimStack) -> Iterator[ManagedProcess]:
    with managed(start_worker(stack.env, stack.log_dir, queues=f"celery,{LOST_QUEUE}")) as process:
        yield process


def submit_to(stack: ReclaimStack, key: str, queue: str = "", countdown: float = 0) -> str:
    """Submit `tests.count_run(key)`; its task id."""
    options = pb.SubmitOptions(queue=queue)
    if countdown:
        options.countdown.CopyFrom(seconds(countdown))
    ask = pb.SubmitRequest(task="tests.count_run", args_json=json.dumps([key]), options=options)
    return stack.stub.Submit(ask, timeout=10).task_id


def reclaimed_count(stack: ReclaimStack) -> float:
    """`taskgate_messages_reclaimed_total` as the gateway's /metrics says now."""
    return value(scrape(metrics_url(stack.gateway)), "taskgate_messages_reclaimed_total")


def copy_gone(client: redis.Redis, task_id: str) -> bool:
    """True once the in-flight entry and copy of `task_id` are removed."""
    return client.zscore(KEYS.index, task_id) is None and not client.exists(KEYS.copy(task_id))


def test_a_message_popped_by_a_worker_that_never_received_it_runs_once(
    stack: ReclaimStack, request: pytest.FixtureRequest
) -> None:
    key = unique()
    reclaimed_before = reclaimed_count(stack)
    with stack.redis.client() as client:
        task_id = submit_to(stack, key, LOST_QUEUE)
        popped = client.brpop([LOST_QUEUE], timeout=5)  # the pop whose reply never arrived
        assert popped is not None
        assert task_id in popped[1].decode()
        assert client.llen(LOST_QUEUE) == 0
        assert not client.hlen("unacked")
        poll(lambda: client.llen(LOST_QUEUE) == 1, "the message queued again", RECLAIM_BOUND)
        assert stack.reclaimed(task_id)
        assert reclaimed_count(stack) == reclaimed_before + 1
        request.getfixturevalue("worker")
        response = await_result(stack.stub, task_id)
        assert response.state == pb.TASK_STATE_SUCCESS
        poll(lambda: copy_gone(client, task_id), "the copy removed", RECLAIM_BOUND)
        assert runs(client, key) == 1
        assert client.llen(LOST_QUEUE) == 0


def test_a_backlog_nobody_consumes_is_never_queued_twice_nor_hides_a_lost_one(
    stack: ReclaimStack,
) -> None:
    with stack.redis.client() as client:
        task_ids = [submit_to(stack, unique(), BACKLOG_QUEUE) for _ in range(2 * BATCH)]
        queued = client.lrange(BACKLOG_QUEUE, 0, -1)
        lost_id = submit_to(stack, unique(), BEHIND_QUEUE)  # younger than the whole backlog
        assert client.brpop([BEHIND_QUEUE], timeout=5) is not None
        looked_at_twice(client, task_ids, KEYS)
        poll(lambda: client.llen(BEHIND_QUEUE) == 1, "the lost one queued again", RECLAIM_BOUND)
        assert client.lrange(BACKLOG_QUEUE, 0, -1) == queued
    assert not any(stack.reclaimed(task_id) for task_id in task_ids)
    assert stack.reclaimed(lost_id)


def test_a_message_kombu_gave_back_is_never_queued_twice(stack: ReclaimStack) -> None:
    # A worker holding a countdown message gives it back (flagged redelivered) when it
    # stops; nobody consumes the queue then, so the message waits there past the grace.
    with stack.redis.client() as client:
        process = start_worker(stack.env, stack.log_dir, queues=RESTORED_QUEUE)
        with managed(process):
            task_id = submit_to(stack, unique(), RESTORED_QUEUE, countdown=60)
            poll(lambda: client.hlen("unacked") == 1, "the worker holds the message")
        restored = client.lrange(RESTORED_QUEUE, 0, -1)
        assert len(restored) == 1
        assert b'"redelivered": true' in restored[0]
        looked_at_twice(client, [task_id], KEYS)
        assert client.lrange(RESTORED_QUEUE, 0, -1) == restored
    assert not stack.reclaimed(task_id)


def test_a_countdown_held_by_a_worker_past_the_grace_is_left_to_it(
    stack: ReclaimStack, worker: ManagedProcess
) -> None:
    key = unique()
    with stack.redis.client() as client:
        task_id = submit_to(stack, key, countdown=6 * GRACE)
        poll(lambda: client.hlen("unacked") == 1, "the worker holds the message")
        looked_at_twice(client, [task_id], KEYS)
        assert runs(client, key) == 0  # the countdown still runs, and not one check early
        assert await_result(stack.stub, task_id).state == pb.TASK_STATE_SUCCESS
        poll(lambda: copy_gone(client, task_id), "the copy removed", RECLAIM_BOUND)
        assert runs(client, key) == 1
    assert not stack.reclaimed(task_id)


def test_the_copy_is_removed_once_the_task_ran(stack: ReclaimStack, worker: ManagedProcess) -> None:
    key = unique()
    with stack.redis.client() as client:
        task_id = submit_to(stack, key)
        assert client.hget(KEYS.copy(task_id), "queue") == b"celery"
        assert await_result(stack.stub, task_id).state == pb.TASK_STATE_SUCCESS
        poll(lambda: copy_gone(client, task_id), "the copy removed", RECLAIM_BOUND)
        assert runs(client, key) == 1
    assert not stack.reclaimed(task_id)


def test_a_message_lost_again_and_again_is_given_up_with_an_error(stack: ReclaimStack) -> None:
    with stack.redis.client() as client:
        task_id = submit_to(stack, unique(), VOID_QUEUE)
        for _ in range(MAX_RECLAIMS + 1):  # each copy queued again is lost too
            popped = client.brpop([VOID_QUEUE], timeout=RECLAIM_BOUND)
            assert popped is not None
            assert task_id in popped[1].decode()
        poll(lambda: copy_gone(client, task_id), "the copy dropped", RECLAIM_BOUND)
        assert client.llen(VOID_QUEUE) == 0
    assert f"task {task_id} was queued again {MAX_RECLAIMS} times" in stack.gateway.log_text()


def test_the_reclaimer_is_on_by_default_and_turned_off_by_name() -> None:
    assert ReclaimSettings.from_env({}).enabled
    assert not ReclaimSettings.from_env({"TASKGATE_RECLAIM": "off"}).enabled
    with pytest.raises(SettingsError, match="TASKGATE_RECLAIM_GRACE"):
        ReclaimSettings.from_env({"TASKGATE_RECLAIM_GRACE": "-1"})


PURGED_QUEUE = "reclaim-purged"  # consumed by no one, purged by the test
PURGE = Path(sys.executable).parent / "taskgate-purge"  # the console script, as installed


def purge(env: dict[str, str], *queues: str) -> subprocess.CompletedProcess[str]:
    """Run `taskgate-purge QUEUE...` with `env`."""
    argv = [str(PURGE), *queues]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_queue_purged_with_taskgate_purge_stays_empty(stack: ReclaimStack) -> None:
    """`celery purge` leaves the in-flight copies, and the reclaimer queues the purged
    messages again; `taskgate-purge` deletes both, priority lists included, and leaves
    a queue whose name merely starts the same."""
    client = stack.redis.client()
    purged = [submit_to(stack, unique(), queue=PURGED_QUEUE) for _ in range(3)]
    urgent = pb.SubmitOptions(queue=PURGED_QUEUE, priority=9)
    ask = pb.SubmitRequest(task="tests.count_run", args_json=json.dumps([unique()]), options=urgent)
    purged.append(stack.stub.Submit(ask, timeout=10).task_id)
    kept = submit_to(stack, unique(), queue=f"{PURGED_QUEUE}-kept")

    done = purge(stack.env, PURGED_QUEUE)

    assert (done.returncode, done.stdout) == (0, f"{PURGED_QUEUE}: 4 messages purged\n"), done
    looked_at_twice(client, [kept], KEYS)  # two sweeps since: a purged message would be back
    assert [stack.reclaimed(task_id) for task_id in purged] == [False] * 4
    assert client.keys(f"{PURGED_QUEUE}*") == [f"{PURGED_QUEUE}-kept".encode()]
    assert [client.zscore(KEYS.index, task_id) for task_id in purged] == [None] * 4


def test_taskgate_purge_on_rabbitmq_says_to_use_celery_purge() -> None:
    env = fault_env("amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:1/0")
    done = purge(env, "celery")
    assert done.returncode == 1, done
    assert done.stderr == (
        "taskgate-purge: configuration error: the broker is not Redis: nothing of "
        "taskgate's stays behind a purge there, use `celery purge`\n"
    )
