"""Messages built from a cached template equal the ones Celery builds afresh."""

import base64
import json
import uuid
from typing import Any

from kombu.utils import json as kombu_json

from taskgate.server.dispatch import create_gateway_app
from taskgate.server.publish.message import MessageBuilder
from taskgate.server.requests import Submission
from taskgate.worker.config import CelerySettings

URL = "redis://127.0.0.1:1/0"  # never connected to: building a message does no I/O


def decoded(payload: str) -> dict[str, Any]:
    """A stored message, its body decoded, without what differs per publish and app
    (the delivery tag, the app's reply queue)."""
    message: dict[str, Any] = json.loads(payload)
    message["properties"].pop("delivery_tag")
    message["properties"].pop("reply_to")
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def no_route(name: str, args: Any, kwargs: Any, options: Any, **rest: Any) -> None:
    """A router function: it could route by the arguments, so nothing is cached by name."""


def test_a_template_used_again_builds_each_task_as_celery_builds_it_afresh() -> None:
    app = create_gateway_app(CelerySettings(broker_url=URL, result_backend=URL))
    afresh_app = create_gateway_app(CelerySettings(broker_url=URL, result_backend=URL))
    afresh_app.conf.task_routes = (no_route,)
    reused, afresh = MessageBuilder(app), MessageBuilder(afresh_app)
    reused.build(str(uuid.uuid4()), Submission("tasks.add", [0], {}, {"priority": 5}))
    tags = set()
    cases: list[tuple[list[Any], dict[str, Any], dict[str, Any]]] = [
        ([2, "é"], {"x": {"y": [1]}}, {"priority": 5}),
        ([], {}, {"priority": 5, "headers": {"tenant": "blue"}}),
        ([1], {}, {"queue": "other"}),
    ]
    for args, kwargs, options in cases:
        task_id = str(uuid.uuid4())
        submission = Submission("tasks.add", args, kwargs, options)
        again, fresh = reused.build(task_id, submission), afresh.build(task_id, submission)
        assert again is not None
        assert fresh is not None
        assert (again.key, again.queue.name) == (fresh.key, fresh.queue.name)
        assert decoded(again.payload) == decoded(fresh.payload)
        assert decoded(again.payload)["headers"]["id"] == task_id
        tags.add(json.loads(again.payload)["properties"]["delivery_tag"])
    assert len(tags) == 3, "kombu needs a delivery tag of its own for every message"


def test_a_message_from_the_encoded_layout_is_the_text_kombu_writes() -> None:
    app = create_gateway_app(CelerySettings(broker_url=URL, result_backend=URL))
    afresh_app = create_gateway_app(CelerySettings(broker_url=URL, result_backend=URL))
    afresh_app.conf.task_routes = (no_route,)
    reused, afresh = MessageBuilder(app), MessageBuilder(afresh_app)
    tracing = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    for headers in ({}, tracing, {"tenant": "é'\"", "b": "2"}, {"id": "mine"}, {"argsrepr": "x"}):
        for args, kwargs in (([1, 2], {}), (["é\u2028", {"a": [None]}], {"k": 1.5})):
            task_id = str(uuid.uuid4())
            submission = Submission("tasks.add", args, kwargs, {"headers": headers})
            message, fresh = reused.build(task_id, submission), afresh.build(task_id, submission)
            assert message is not None
            assert fresh is not None
            stored = json.loads(message.payload)
            # json.loads keeps the order of the keys: this is kombu's text for the message.
            assert message.payload == kombu_json.dumps(stored)
            assert decoded(message.payload) == decoded(fresh.payload)
            assert list(stored["headers"]) == list(json.loads(fresh.payload)["headers"])
