"""SubmitBatch's publish: the unkeyed items of a batch go to the broker together, in one
pipeline, each queued once with its record, each with its own outcome.

Real redis-servers; the publisher is driven directly, as SubmitBatch drives it.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from scripts.stack import RedisServer, free_port
from taskgate.server.dispatch import Dispatcher, create_gateway_app
from taskgate.server.errors import GatewayError, Internal, Unavailable
from taskgate.server.publish.broker import RedisBroker
from taskgate.server.publish.message import MessageBuilder
from taskgate.server.publish.publisher import Publication, Publisher
from taskgate.server.records import DispatchRecord, DispatchRecords
from taskgate.server.requests import Submission
from taskgate.worker.config import CelerySettings
from tests.test_publish_conformance import events_during

QUEUE = "batch"
SUBMISSION = Submission("tasks.add", [1, 2], {}, {"queue": QUEUE})
# Its own retry policy: published on its own, beside the others.
OWN_POLICY = Submission(
    "tasks.add", [3, 4], {}, {"queue": QUEUE, "retry_policy": {"max_retries": 1}}
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server, broker and result backend in one database; a test's own,
    since one turns it into a read-only replica."""
    redis_server = RedisServer(tmp_path)
    yield redis_server
    redis_server.stop()


def publications(count: int, submission: Submission = SUBMISSION) -> list[Publication]:
    """`count` fresh task ids, each with `submission` and its record."""
    record = DispatchRecord(submission.task, time.time())
    return [(str(uuid.uuid4()), submission, record) for _ in range(count)]


def publish_together(
    url: str,
    items: list[Publication],
    *,
    time_left: float = 5.0,
    spy: list[str] | None = None,
    events: bool = False,
    took: list[float] | None = None,
) -> list[GatewayError | None]:
    """`Publisher.publish_many` of `items`; `spy` gets one entry a round trip to the broker;
    `events` turns task_send_sent_event on; `took` gets the seconds publish_many took."""
    app = create_gateway_app(CelerySettings(broker_url=url, result_backend=url))
    app.conf.task_send_sent_event = events

    async def run() -> list[GatewayError | None]:
        client = redis.asyncio.Redis.from_url(url)
        backend = redis.asyncio.Redis.from_url(url)
        builder = MessageBuilder(app)
        broker = RedisBroker(client, builder.rules, holds_records=True)
        if spy is not None:
            real_pipeline = client.pipeline

            def pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
                spy.append(f"pipeline, transaction={transaction}")  # a spy: still sent
                return real_pipeline(transaction, shard_hint)

            client.pipeline = pipeline  # type: ignore[method-assign]
        publisher = Publisher(Dispatcher(app, 1), DispatchRecords(backend, 600.0), builder, broker)
        started = time.monotonic()
        try:
            return await publisher.publish_many(items, time_left)
        finally:
            if took is not None:
                took.append(time.monotonic() - started)
            await publisher.close()
            await backend.aclose()

    try:
        return asyncio.run(run())
    finally:
        app.close()


def queued_ids(url: str) -> list[str]:
    """The task ids of the messages waiting in the batch queue."""
    with redis.Redis.from_url(url) as client:
        return [json.loads(raw)["headers"]["id"] for raw in client.lrange(QUEUE, 0, -1)]


def recorded(url: str, task_ids: list[str]) -> list[bool]:
    """Whether each task id has its dispatch record."""
    with redis.Redis.from_url(url) as client:
        return [bool(client.exists(f"taskgate:task:{task_id}")) for task_id in task_ids]


def test_a_batch_is_queued_in_one_round_trip_each_task_once_with_its_record(
    server: RedisServer,
) -> None:
    url = server.db_url(0)
    items = publications(301)
    publish_together(url, items[:1])  # loads the script into this fresh Redis
    round_trips: list[str] = []
    # More than one script takes: three scripts, in one pipeline.
    assert publish_together(url, items[1:], spy=round_trips) == [None] * 300
    # The queue's declaration (kombu's binding, once a process), then the messages.
    assert round_trips == ["pipeline, transaction=True", "pipeline, transaction=False"]
    task_ids = [task_id for task_id, _, _ in items]
    assert sorted(queued_ids(url)) == sorted(task_ids)
    assert all(recorded(url, task_ids))


def test_a_batch_published_again_queues_nothing_twice(server: RedisServer) -> None:
    """A retried batch (after a timeout that may have delivered it) is a no-op for every
    task id that went out, and queues the ones that did not."""
    url = server.db_url(0)
    items = publications(50)
    assert publish_together(url, items[:30]) == [None] * 30
    assert publish_together(url, items) == [None] * 50
    assert sorted(queued_ids(url)) == sorted(task_id for task_id, _, _ in items)


def test_items_with_their_own_retry_policy_are_published_beside_the_others(
    server: RedisServer,
) -> None:
    url = server.db_url(0)
    items = publications(3) + publications(2, OWN_POLICY) + publications(3)
    assert publish_together(url, items) == [None] * 8
    assert sorted(queued_ids(url)) == sorted(task_id for task_id, _, _ in items)


def test_an_item_whose_queue_key_is_broken_fails_alone(server: RedisServer) -> None:
    """A priority list's key holding a string (WRONGTYPE) fails its item INTERNAL (and
    logs why); the others, in its script and in the scripts after it, are queued."""
    url = server.db_url(0)
    urgent = Submission("tasks.add", [5, 6], {}, {"queue": QUEUE, "priority": 9})
    with redis.Redis.from_url(url) as client:
        client.set(f"{QUEUE}\x06\x169", "not a list")  # kombu's key for priority 9
    items = publications(100) + publications(1, urgent) + publications(200)
    outcomes = publish_together(url, items)
    assert isinstance(outcomes[100], Internal), outcomes[100]
    assert outcomes[:100] + outcomes[101:] == [None] * 300
    queued = sorted(queued_ids(url))
    assert queued == sorted(task_id for i, (task_id, _, _) in enumerate(items) if i != 100)


def test_a_broker_that_refuses_writes_fails_every_item_and_queues_none(
    server: RedisServer,
) -> None:
    """A read-only replica (as a failed-over primary becomes) refuses the batch: every
    item is Unavailable, retried within the deadline, and nothing is half-written; once
    it takes writes again, the same batch is queued whole."""
    url = server.db_url(0)
    items = publications(20)
    with redis.Redis.from_url(url) as client:
        client.replicaof("127.0.0.1", free_port())  # nothing there: stays read-only
        took: list[float] = []
        try:
            outcomes = publish_together(url, items, time_left=2.0, took=took)
        finally:
            client.replicaof("NO", "ONE")
    assert took[0] < 2.0, "retried within the deadline, not past it"
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes
    assert "refuses writes" in str(outcomes[0])
    task_ids = [task_id for task_id, _, _ in items]
    assert queued_ids(url) == []
    assert not any(recorded(url, task_ids))
    assert publish_together(url, items) == [None] * 20
    assert sorted(queued_ids(url)) == sorted(task_ids)


def test_a_broker_that_is_gone_fails_every_item_within_the_deadline() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    took: list[float] = []
    outcomes = publish_together(url, publications(10), time_left=3.0, took=took)
    assert took[0] < 3.0
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes
    assert "unavailable" in str(outcomes[0])


def test_a_batch_sends_a_task_sent_event_for_each_task_it_queued(server: RedisServer) -> None:
    """With task_send_sent_event on, as `send_task` would for each (the tests of the
    one-by-one path compare the event with Celery's own)."""
    url = server.db_url(0)
    items = publications(20)
    seen = events_during(url, 0, lambda: publish_together(url, items, events=True))
    assert sorted(event["body"]["uuid"] for event in seen) == sorted(t for t, _, _ in items)
    assert {event["channel"] for event in seen} == {"/0.celeryev/task.sent"}
