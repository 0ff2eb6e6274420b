"""A Redis that freezes (SIGSTOP: a paused VM, a partition) past the socket timeout.

A command sent to a frozen Redis sits in its socket buffer and runs when it
resumes, after the gateway gave up on it: a publish or a claim that timed out
may have happened. The tests check that the gateway never turns that into a
second task id, and that copies of one task id run once (worker/guard.py).
CLIENT PAUSE does not show this: Redis drops the commands of a client that left.
"""

import base64
import json
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, start_worker
from taskgate.server.idempotency import Claim
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import (
    Outcome,
    await_result,
    fault_env,
    managed,
    outcome,
    poll,
    request,
    runs,
    unique,
)

KEY_PREFIX = "taskgate:idempotency:"
SOCKET_TIMEOUT = 5.0  # kombu's and the gateway's Redis socket timeout (worker/factory.py)


@dataclass
class Stack:
    """A broker and a result backend, each its own redis-server, and a gateway."""

    broker: RedisServer
    backend: RedisServer
    env: dict[str, str]
    log_dir: Path
    stub: pb_grpc.TaskServiceStub

    def to_queue(self, queue: str, key: str, idempotency_key: str = "") -> pb.SubmitRequest:
        """A Submit of tests.count_run(key) to `queue`, where no worker listens yet."""
        submission = request("tests.count_run", key, idempotency_key=idempotency_key)
        submission.options.queue = queue
        return submission

    def declared(self, queue: str) -> str:
        """`queue`, once the gateway has published to it: a queue is declared (SADD)
        before its first publish, and a declare stuck on a frozen Redis would keep the
        test's own publish from being sent at all. The Submit is keyed, so the gateway
        also holds a connection to the backend: a command to a frozen Redis sits in that
        socket's buffer, where a new connection would wait for its handshake and never
        send the command at all."""
        self.stub.Submit(self.to_queue(queue, unique(), idempotency_key=unique()), timeout=10)
        return queue

    def run_queue(self, queue: str, task_ids: list[str]) -> None:
        """Start a worker on `queue` and wait until every task in `task_ids` succeeded."""
        with managed(start_worker(self.env, self.log_dir, queues=queue)):
            for task_id in task_ids:
                assert await_result(self.stub, task_id).state == pb.TASK_STATE_SUCCESS


def _stack(log_dir: Path, broker: RedisServer, backend: RedisServer) -> Iterator[Stack]:
    env = fault_env(broker.url, backend.url, TASKGATE_WORKERS_REFRESH="3600")
    with (
        managed(Gateway(env, log_dir)) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        yield Stack(broker, backend, env, log_dir, pb_grpc.TaskServiceStub(channel))


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Broker and backend on separate servers: only the broker freezes."""
    log_dir = tmp_path_factory.mktemp("frozen-split")
    with ExitStack() as servers:
        broker = servers.enter_context(managed(RedisServer(log_dir)))
        backend = servers.enter_context(managed(RedisServer(log_dir)))
        yield from _stack(log_dir, broker, backend)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One redis-server as broker and backend, as docker-compose.yml runs it."""
    log_dir = tmp_path_factory.mktemp("frozen-shared")
    with managed(RedisServer(log_dir)) as server:
        yield from _stack(log_dir, server, server)


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """Freeze the redis-server process for the block; it always resumes."""
    server.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.signal(signal.SIGCONT)


def during_freeze(server: RedisServer, seconds: float, call: Callable[[], object]) -> Outcome:
    """Run `call` while `server` is frozen for `seconds`; how the call ended."""
    with ThreadPoolExecutor(1) as caller, frozen(server):
        ended = caller.submit(outcome, call)
        time.sleep(seconds)  # the length of the freeze is the fault itself
    return ended.result()


def copies(server: RedisServer, queue: str, task_id: str) -> int:
    """How many messages for `task_id` wait in `queue`."""
    with server.client() as client:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    return sum(message["headers"]["id"] == task_id for message in messages)


def claim_of(server: RedisServer, key: str) -> Claim:
    """The stored claim of an idempotency key."""
    with server.client() as client:
        return Claim.decode(client.get(KEY_PREFIX + key))


def test_a_keyed_submit_that_timed_out_on_a_frozen_broker_runs_once(split: Stack) -> None:
    """The issue's case 2. The broker freezes past the socket timeout: the Submit ends
    UNAVAILABLE, although its LPUSH lands when the broker resumes. The retry with the
    same key gets the same task id, queues no second copy (the publish script is a
    no-op for a task id already published), and the task runs once.
    Before, the key was freed and the retry queued a second task id: two runs."""
    queue, key = split.declared(unique("frozen-keyed-")), unique()
    submission = split.to_queue(queue, key, idempotency_key=key)
    first = during_freeze(
        split.broker, SOCKET_TIMEOUT + 2, lambda: split.stub.Submit(submission, timeout=8)
    )
    assert first.code == grpc.StatusCode.UNAVAILABLE, first
    assert first.seconds < 8, first
    held = claim_of(split.backend, key)
    poll(lambda: copies(split.broker, queue, held.task_id) == 1, "the timed-out LPUSH landed", 5)

    retried = split.stub.Submit(submission, timeout=10)
    assert retried.task_id == held.task_id
    assert copies(split.broker, queue, held.task_id) == 1
    split.run_queue(queue, [retried.task_id])
    with split.backend.client() as client:
        assert runs(client, key) == 1


def test_a_publish_retried_after_a_timeout_fits_the_deadline_and_runs_once(
    split: Stack,
) -> None:
    """The issue's case 3. Without a key, the gateway retries a publish that timed out
    under the same task id, within the deadline: the first try lands when the broker
    resumes and the retry is a no-op, so one copy is queued and the worker runs it once.
    Before, kombu's retry ran the task twice and held the publish for about 25 s
    whatever the deadline."""
    queue, key = split.declared(unique("frozen-retry-")), unique()
    submission = split.to_queue(queue, key)
    deadline = 2 * SOCKET_TIMEOUT + 2
    ended = during_freeze(
        split.broker,
        SOCKET_TIMEOUT + 1.5,
        lambda: split.stub.Submit(submission, timeout=deadline),
    )
    assert ended.code == grpc.StatusCode.OK, ended
    assert ended.seconds < deadline, ended
    with split.broker.client() as client:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    # The declaring Submit's task, and the retried publish's task once: no second copy.
    retried = [m for m in messages if json.loads(base64.b64decode(m["body"]))[0] == [key]]
    [task_id] = [message["headers"]["id"] for message in retried]
    split.run_queue(queue, [task_id])
    with split.backend.client() as client:
        assert runs(client, key) == 1


def test_a_claim_that_landed_after_its_call_gave_up_is_taken_over_soon(shared: Stack) -> None:
    """The issue's case 4. One frozen Redis holds broker and backend: a keyed Submit's
    claim times out with its call, then lands when Redis resumes, owned by nobody. Its
    lease is the call's deadline, so a retry soon after takes it over under the same
    task id. Before, retries got DEADLINE_EXCEEDED for 30 s."""
    queue, key = shared.declared(unique("frozen-claim-")), unique()
    submission = shared.to_queue(queue, key, idempotency_key=key)
    first = during_freeze(shared.broker, 4, lambda: shared.stub.Submit(submission, timeout=2))
    assert first.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), first
    held = claim_of(shared.backend, key)
    assert not held.published

    retried = outcome(lambda: shared.stub.Submit(submission, timeout=5))
    assert retried.code == grpc.StatusCode.OK, retried
    assert claim_of(shared.backend, key).task_id == held.task_id
    shared.run_queue(queue, [held.task_id])
    with shared.backend.client() as client:
        assert runs(client, key) == 1


BATCH = 1000


def _keyed_batch(stack: Stack, queue: str, keys: list[str]) -> pb.SubmitBatchRequest:
    return pb.SubmitBatchRequest(requests=[stack.to_queue(queue, key, key) for key in keys])


def test_a_keyed_batch_retried_after_its_gateway_was_killed_runs_each_task_once(
    split: Stack,
) -> None:
    """The issue's case 5. A keyed SubmitBatch of 1,000; its gateway is SIGKILLed once
    part of it is in the broker. The same batch retried on a fresh gateway keeps every
    key's task id, republishing those whose claims were left unpublished (their lease
    is the killed call's deadline), and each task runs once. Before, 12-21% of the keys
    ran twice: the takeover republished ids whose first copy had landed."""
    queue = split.declared(unique("killed-batch-"))
    keys = [unique() for _ in range(BATCH)]
    batch = _keyed_batch(split, queue, keys)
    doomed = Gateway(split.env, split.log_dir)
    with ThreadPoolExecutor(1) as caller, grpc.insecure_channel(doomed.address) as channel:
        cut = caller.submit(
            outcome, lambda: pb_grpc.TaskServiceStub(channel).SubmitBatch(batch, timeout=5)
        )
        with split.broker.client() as client:
            poll(lambda: client.llen(queue) > BATCH // 4, "a quarter of the batch queued", 10)
        doomed.signal(signal.SIGKILL)
        doomed.stop()
        assert cut.result().code != grpc.StatusCode.OK
    with split.broker.client() as client:
        landed = client.llen(queue) - 1  # less the declaring Submit
    assert 0 < landed < BATCH, f"{landed} of the batch were queued before the kill"
    with split.backend.client() as client:
        held = {
            key: Claim.decode(raw).task_id for key in keys if (raw := client.get(KEY_PREFIX + key))
        }

    retried = split.stub.SubmitBatch(batch, timeout=30)
    assert all(not result.HasField("error") for result in retried.results)
    task_ids = [result.task_id for result in retried.results]
    assert [task_id for key, task_id in zip(keys, task_ids, strict=True) if key in held] == list(
        held.values()
    )
    split.run_queue(queue, task_ids)
    with split.backend.client() as client:
        assert [runs(client, key) for key in keys] == [1] * BATCH
