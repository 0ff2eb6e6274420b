"""taskgate's own Redis publish path stores what Celery's `send_task` stores, and a
stock Celery worker runs it with every option visible in `self.request`.

Each case publishes one logical task twice into a private redis-server: once with
`send_task`, once with the own path; the stored JSON must match except for what
must differ (delivery tag, origin, reply_to, the moment times were computed).
"""

import asyncio
import base64
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from scripts.stack import ManagedProcess, RedisServer
from taskgate.server.dispatch import create_gateway_app
from taskgate.server.publish.broker import RedisBroker
from taskgate.server.publish.message import MessageBuilder
from taskgate.server.requests import Submission
from taskgate.worker.config import CelerySettings

TASK = "tasks.echo_request"
# Fields set per publish: a delivery tag, the producer's name, its reply queue.
VARYING = {("properties", "delivery_tag"), ("headers", "origin"), ("properties", "reply_to")}
TIMES = (("headers", "eta"), ("headers", "expires"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for this module."""
    process = RedisServer(tmp_path_factory.mktemp("conformance"))
    yield process
    process.stop()


def gateway_app(url: str, **conf: Any) -> Celery:
    """The gateway's own Celery app on `url`, with `conf` on top (transport options merged)."""
    app = create_gateway_app(CelerySettings(broker_url=url, result_backend=url))
    transport = conf.pop("broker_transport_options", {})
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, **transport}
    app.conf.update(conf)
    return app


def stored(client: redis.Redis) -> dict[str, Any]:
    """Every key in the database: lists as their decoded messages, sets as members."""
    found: dict[str, Any] = {}
    for raw in client.keys("*"):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        kind = client.type(raw)
        if kind == b"list":
            found[key] = [json.loads(item) for item in client.lrange(raw, 0, -1)]
        elif kind == b"set":
            found[key] = sorted(client.smembers(raw))
    return found


def own_path_publish(app: Celery, url: str, task_id: str, submission: Submission) -> str:
    """Publish through MessageBuilder and RedisBroker, as the gateway does; the marker key."""
    builder = MessageBuilder(app)
    message = builder.build(task_id, submission)
    assert message is not None, "the own path should take this route"

    async def push() -> None:
        broker = RedisBroker(redis.asyncio.Redis.from_url(url), builder.rules, holds_records=False)
        assert await broker.push(message, 60, None)
        await broker.close()

    asyncio.run(push())
    return f"{builder.rules.global_keyprefix}taskgate:published:{task_id}"


def strip_varying(message: dict[str, Any], times: dict[tuple[str, str], Any]) -> None:
    """Drop what differs per publish, move the times to `times`, decode the body."""
    for section, name in VARYING:
        message[section].pop(name)
    for section, name in TIMES:
        times[(section, name)] = message[section].pop(name)
    if "expiration" in message["properties"]:
        times[("properties", "expiration")] = message["properties"].pop("expiration")
    message["body"] = json.loads(base64.b64decode(message["body"]))


def comparable(keys: dict[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    """The stored keys minus taskgate's marker, messages stripped; the times apart."""
    times: dict[tuple[str, str], Any] = {}
    for value in keys.values():
        for message in value:
            if isinstance(message, dict):
                strip_varying(message, times)
    return {k: v for k, v in keys.items() if "taskgate:" not in k}, times


def assert_same_times(celery: dict[Any, Any], own: dict[Any, Any]) -> None:
    """Times computed from `now` a moment apart: within two seconds of each other."""
    assert celery.keys() == own.keys()
    for where, value in celery.items():
        if where == ("properties", "expiration"):
            assert abs(int(value) - int(own[where])) < 2000, where
        elif value is None:
            assert own[where] is None, where
        else:
            gap = datetime.fromisoformat(value) - datetime.fromisoformat(own[where])
            assert abs(gap.total_seconds()) < 2, where


NOW = datetime.now(UTC)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default queue": ({}, {}),
    "routed queue": ({"task_routes": {TASK: {"queue": "routed"}}}, {}),
    "priority 0": ({}, {"priority": 0}),
    "priority 3": ({}, {"priority": 3}),
    "priority 5": ({}, {"priority": 5}),
    "priority 9": ({}, {"priority": 9}),
    "priority 10": ({}, {"priority": 10}),
    "countdown": ({}, {"countdown": 30.0}),
    "eta": ({}, {"eta": NOW + timedelta(minutes=5)}),
    "expires": ({}, {"expires": NOW + timedelta(hours=1)}),
    "custom headers": ({}, {"headers": {"x_custom": "v", "traceparent": "00-" + "1" * 32}}),
    "global_keyprefix": ({"broker_transport_options": {"global_keyprefix": "pfx:"}}, {}),
    "priority_steps": (
        {"broker_transport_options": {"priority_steps": [0, 2, 4, 6, 8]}},
        {"priority": 5, "queue": "stepped"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_own_path_stores_what_send_task_stores(server: RedisServer, case: str) -> None:
    conf, options = CASES[case]
    # A database per case: kombu's connection pools are process-wide and remember which
    # queues they declared, so a second send_task to the same URL would declare nothing.
    url = server.db_url(list(CASES).index(case) + 1)
    app = gateway_app(url, **json.loads(json.dumps(conf)))
    task_id = str(uuid.uuid4())
    submission = Submission(TASK, [2, "é"], {"x": {"y": [1]}}, dict(options))
    client = redis.Redis.from_url(url)
    client.flushdb()
    app.send_task(TASK, args=submission.args, kwargs=submission.kwargs, task_id=task_id,
                  **options)  # fmt: skip
    by_celery = stored(client)
    client.flushdb()
    marker = own_path_publish(app, url, task_id, submission)
    by_taskgate = stored(client)
    app.close()
    assert client.exists(marker)
    celery_keys, celery_times = comparable(by_celery)
    own_keys, own_times = comparable(by_taskgate)
    assert own_keys == celery_keys
    assert_same_times(celery_times, own_times)


# The stock worker's transport: a key prefix and non-default priority steps, so that
# a message pushed to any other key than kombu's own would never be consumed.
STOCK_TRANSPORT = {"global_keyprefix": "stock:", "priority_steps": [0, 2, 4, 6, 8]}
STOCK_CASES: dict[str, dict[str, Any]] = {
    "default queue": {},
    "routed queue": {"queue": "routed"},
    "priority": {"priority": 5},
    "countdown": {"countdown": 1.0},
    "eta": {"eta": "in 1 second"},
    "expires": {"expires": "in 1 hour"},
    "custom headers": {"headers": {"x_custom": "v", "traceparent": "00-" + "2" * 32}},
}


def resolved(options: dict[str, Any]) -> dict[str, Any]:
    """The case's options with its relative times made absolute now."""
    now = datetime.now(UTC)
    moments = {"in 1 second": now + timedelta(seconds=1), "in 1 hour": now + timedelta(hours=1)}
    return {k: moments.get(v, v) if isinstance(v, str) else v for k, v in options.items()}


@pytest.fixture(scope="module")
def stock_worker(server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain `celery worker` of tests/stock_app.py (no taskgate code); its broker URL."""
    url = server.db_url(14)
    env = {
        **os.environ,
        "STOCK_BROKER": url,
        "STOCK_BACKEND": url,
        "STOCK_TRANSPORT_JSON": json.dumps(STOCK_TRANSPORT),
    }
    argv = [sys.executable, "-m", "celery", "-A", "tests.stock_app", "worker", "--pool=solo",
            "--queues=celery,routed", "--hostname=stock@%h", "--without-mingle",
            "--without-gossip", "--loglevel=INFO"]  # fmt: skip
    worker = ManagedProcess("stock-worker", argv, env, tmp_path_factory.mktemp("stock"))
    worker.started(re.compile(r"stock@\S+ ready\."))
    yield url
    worker.stop()


@pytest.mark.parametrize("case", list(STOCK_CASES))
def test_a_stock_worker_runs_the_own_path_with_every_option(stock_worker: str, case: str) -> None:
    options = resolved(STOCK_CASES[case])
    app = gateway_app(stock_worker, broker_transport_options=STOCK_TRANSPORT)
    task_id = str(uuid.uuid4())
    submission = Submission(TASK, [1, "é"], {"k": [2]}, dict(options))
    published_at = datetime.now(UTC)
    own_path_publish(app, stock_worker, task_id, submission)
    seen: dict[str, Any] = AsyncResult(task_id, app=app).get(timeout=20)
    app.close()
    assert (seen["id"], seen["root_id"], seen["correlation_id"]) == (task_id,) * 3
    assert (seen["args"], seen["kwargs"]) == ([1, "é"], {"k": [2]})
    assert seen["routing_key"] == options.get("queue", "celery")
    assert seen["priority"] == options.get("priority", 0)
    headers = options.get("headers", {})
    assert (seen["x_custom"], seen["traceparent"]) == (
        headers.get("x_custom"),
        headers.get("traceparent"),
    )
    for name in ("eta", "expires"):
        expected = options.get(name)
        if name == "eta" and "countdown" in options:
            expected = published_at + timedelta(seconds=options["countdown"])
        assert (seen[name] is None) == (expected is None), name
        if expected is not None:
            gap = datetime.fromisoformat(seen[name]) - expected
            assert abs(gap.total_seconds()) < 2, name


def events_during(url: str, db: int, publish: Any) -> list[dict[str, Any]]:
    """The events of database `db` PUBLISHed while `publish()` ran, bodies decoded
    (the stock worker of another database sends its own)."""
    with redis.Redis.from_url(url) as client, client.pubsub() as pubsub:
        pubsub.psubscribe(f"*/{db}.celeryev/*")
        assert pubsub.get_message(timeout=5) is not None  # the subscription is in place
        publish()
        events = []
        while (message := pubsub.get_message(timeout=1)) is not None:
            envelope = json.loads(message["data"])
            envelope["channel"] = message["channel"].decode()
            envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
            events.append(envelope)
    return events


# Fields of an event that name the producer process or the moment it was sent.
EVENT_VARYING = ("hostname", "pid", "clock", "timestamp", "utcoffset")


def test_the_task_sent_event_matches_send_task(server: RedisServer) -> None:
    """With task_send_sent_event on, the own path PUBLISHes the event Flower counts."""
    db = 15
    url = server.db_url(db)
    app = gateway_app(url, task_send_sent_event=True)
    task_id = str(uuid.uuid4())
    submission = Submission(TASK, [3], {}, {"queue": "evented"})
    by_celery = events_during(
        url, db, lambda: app.send_task(TASK, args=[3], task_id=task_id, queue="evented")
    )
    by_taskgate = events_during(url, db, lambda: own_path_publish(app, url, task_id, submission))
    app.close()
    assert len(by_celery) == len(by_taskgate) == 1
    for event in by_celery + by_taskgate:
        event["properties"].pop("delivery_tag")
        event["headers"].pop("hostname")
        for name in EVENT_VARYING:
            event["body"].pop(name)
    assert by_taskgate == by_celery
    assert by_taskgate[0]["channel"] == "/15.celeryev/task.sent"
