"""The own publish path queues a task id once, however often it is published, and the
publishes of concurrent calls share one pipeline, each with its own outcome.

Real redis-servers; the publisher is driven directly, as Submit and SubmitBatch do.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from scripts.stack import RedisServer
from taskgate.server.dispatch import Dispatcher, create_gateway_app
from taskgate.server.publish.batcher import MOST_PER_SCRIPT
from taskgate.server.publish.broker import RedisBroker, same_redis
from taskgate.server.publish.message import MessageBuilder, TaskMessage
from taskgate.server.publish.publisher import Publisher
from taskgate.server.records import DispatchRecord, DispatchRecords
from taskgate.server.requests import Submission
from taskgate.worker.config import CelerySettings

RESULT_EXPIRES = 600.0
SUBMISSION = Submission("tasks.add", [1, 2], {}, {"queue": "once"})


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two private redis-servers: a broker, and a result backend apart from it."""
    log_dir = tmp_path_factory.mktemp("publish-once")
    broker, backend = RedisServer(log_dir), RedisServer(log_dir)
    yield broker, backend
    broker.stop()
    backend.stop()


def publish_many(broker_url: str, backend_url: str, task_ids: list[str], times: int) -> None:
    """Publish each task id `times` times, concurrently, through a gateway's Publisher."""
    app = create_gateway_app(CelerySettings(broker_url=broker_url, result_backend=backend_url))

    async def run() -> None:
        backend = redis.asyncio.Redis.from_url(backend_url)
        builder = MessageBuilder(app)
        holds = same_redis(broker_url, backend_url)
        broker = RedisBroker(
            redis.asyncio.Redis.from_url(broker_url), builder.rules, holds_records=holds
        )
        records = DispatchRecords(backend, RESULT_EXPIRES)
        publisher = Publisher(Dispatcher(app, 1), records, builder, broker)
        record = DispatchRecord("tasks.add", time.time())
        await asyncio.gather(
            *(publisher.publish(task_id, SUBMISSION, record, 5.0) for task_id in task_ids * times)
        )
        await publisher.close()
        await backend.aclose()

    asyncio.run(run())
    app.close()


def queued_ids(server: RedisServer, db: int, queue: str) -> list[str]:
    """The task ids of the messages waiting in `queue`."""
    with redis.Redis.from_url(server.db_url(db)) as client:
        return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]


def test_republishing_a_task_id_queues_it_once_with_its_record(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    """Broker and backend in one database: record, marker and message in one script."""
    broker, _ = servers
    url = broker.db_url(1)
    task_ids = [str(uuid.uuid4()) for _ in range(30)]
    publish_many(url, url, task_ids, times=3)
    assert sorted(queued_ids(broker, 1, "once")) == sorted(task_ids)
    with redis.Redis.from_url(url) as client:
        for task_id in task_ids:
            assert json.loads(client.get(f"taskgate:task:{task_id}") or "{}")["task"] == "tasks.add"
            # The marker lives as long as the record: a republish within it is a no-op.
            marker_ttl = client.ttl(f"taskgate:published:{task_id}")
            assert 0 < marker_ttl <= client.ttl(f"taskgate:task:{task_id}")


def test_with_a_separate_backend_the_record_is_written_first_and_the_task_queued_once(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    """Broker and backend apart: the record goes to the backend, then the script to the
    broker; the marker on the broker still makes a republish a no-op."""
    broker, backend = servers
    task_ids = [str(uuid.uuid4()) for _ in range(30)]
    publish_many(broker.db_url(2), backend.db_url(2), task_ids, times=3)
    assert sorted(queued_ids(broker, 2, "once")) == sorted(task_ids)
    with (
        redis.Redis.from_url(backend.db_url(2)) as records,
        redis.Redis.from_url(broker.db_url(2)) as on_broker,
    ):
        assert all(records.exists(f"taskgate:task:{task_id}") for task_id in task_ids)
        assert not any(on_broker.exists(f"taskgate:task:{task_id}") for task_id in task_ids)


def built(builder: MessageBuilder, submission: Submission) -> TaskMessage:
    """The own path's message for a fresh task id (the route is a direct queue)."""
    message = builder.build(str(uuid.uuid4()), submission)
    assert message is not None
    return message


def test_concurrent_publishes_share_one_pipeline_and_keep_their_own_outcome(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    """100 publishes started in one loop turn go out as one script run; the one whose
    priority list's key holds a string (WRONGTYPE) fails alone."""
    broker, _ = servers
    url = broker.db_url(3)
    app = create_gateway_app(CelerySettings(broker_url=url, result_backend=url))
    builder = MessageBuilder(app)
    good = [built(builder, SUBMISSION) for _ in range(100)]
    bad = built(builder, Submission("tasks.add", [], {}, {"queue": "once", "priority": 9}))
    with redis.Redis.from_url(url) as client:
        client.set(bad.key, "not a list")
    round_trips: list[str] = []

    async def run() -> list[Any]:
        client = redis.asyncio.Redis.from_url(url)
        broker = RedisBroker(client, builder.rules, holds_records=False)
        await broker.push(good.pop(), 60, None)  # the queue's declaration goes first
        real_pipeline, real_evalsha = client.pipeline, client.evalsha

        def pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
            round_trips.append(f"pipeline, transaction={transaction}")  # spies: still sent
            return real_pipeline(transaction, shard_hint)

        def evalsha(*args: Any) -> Any:
            round_trips.append("evalsha")
            return real_evalsha(*args)

        client.pipeline = pipeline  # type: ignore[method-assign]
        client.evalsha = evalsha  # type: ignore[assignment,method-assign]
        calls = [broker.push(message, 60, None) for message in good]
        outcomes = await asyncio.gather(*calls, broker.push(bad, 60, None), return_exceptions=True)
        await broker.close()
        return outcomes

    outcomes = asyncio.run(run())
    app.close()
    assert round_trips == ["evalsha"], "one script, one round trip, for the whole turn"
    assert outcomes[:-1] == [True] * 99
    assert isinstance(outcomes[-1], redis.exceptions.ResponseError), outcomes[-1]
    assert "WRONGTYPE" in str(outcomes[-1])
    assert len(queued_ids(broker, 3, "once")) == 100


def test_a_redis_that_lost_its_scripts_gets_the_script_again(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    """After SCRIPT FLUSH (what a restart does), every publish of the next turn, more
    than one script's worth of them, is queued once."""
    broker, _ = servers
    url = broker.db_url(5)
    task_ids = [str(uuid.uuid4()) for _ in range(MOST_PER_SCRIPT + 20)]
    publish_many(url, url, task_ids[:1], times=1)
    with redis.Redis.from_url(url) as client:
        client.script_flush()
    publish_many(url, url, task_ids, times=2)
    assert sorted(queued_ids(broker, 5, "once")) == sorted(task_ids)
