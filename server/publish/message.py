"""The protocol-v2 message kombu's Redis transport would store, built without I/O.

Every piece that decides what goes on the wire is Celery's or kombu's own: the
router (`app.amqp.router.route`), the message layout (`app.amqp.as_task_v2`), the
body serializer (`kombu.serialization.dumps`), the envelope encoder
(`kombu.utils.json.dumps`) and the transport's priority and key rules; this
module only applies them in the order `send_task` does.
"""

import base64
import bisect
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from celery.utils.saferepr import saferepr
from kombu import Queue
from kombu.common import Broadcast
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as serialize
from kombu.transport.redis import PRIORITY_STEPS, Channel
from kombu.utils.json import dumps as encode_envelope

from server.publish.events import broker_db, sent_event_channel, sent_event_payload
from server.requests import Submission

# Route options the fast path reproduces; any other (serializer, compression,
# delivery_mode, exchange lookups...) sends the task through `send_task`.
_ROUTE_OPTIONS = frozenset({"queue", "priority", "exchange", "routing_key", "exchange_type"})
_MIN_PRIORITY, _MAX_PRIORITY = 0, 9  # kombu's virtual transport clamps to this range


@dataclass(frozen=True)
class KeyRules:
    """How kombu's Redis transport names keys, read from `broker_transport_options`."""

    sep: str = Channel.sep
    priority_steps: tuple[int, ...] = tuple(PRIORITY_STEPS)
    global_keyprefix: str = ""

    @classmethod
    def of(cls, transport_options: dict[str, Any]) -> "KeyRules":
        """The rules the workers use, given the same transport options."""
        return cls(
            sep=str(transport_options.get("sep", Channel.sep)),
            priority_steps=tuple(transport_options.get("priority_steps", PRIORITY_STEPS)),
            global_keyprefix=str(transport_options.get("global_keyprefix", "")),
        )

    def queue_key(self, queue: str, priority: int) -> str:
        """kombu's `_q_for_pri`: the list a message of `priority` goes to (no inversion)."""
        clamped = max(min(priority, _MAX_PRIORITY), _MIN_PRIORITY)
        step = self.priority_steps[bisect.bisect(self.priority_steps, clamped) - 1]
        name = f"{queue}{self.sep}{step}" if step else queue
        return self.global_keyprefix + name

    def bindings(self, queue: Queue) -> list[tuple[str, str]]:
        """The binding table SADDs of kombu's queue declaration: (key, member) pairs."""
        member = self.sep.join([queue.routing_key or "", "", queue.name or ""])
        exchange = queue.exchange.name or "amq.direct"
        tables = [Channel.keyprefix_queue]
        permanent = getattr(Channel, "keyprefix_binding_permanent", None)  # kombu >= 5.7
        if permanent:
            tables.append(permanent)
        return [(self.global_keyprefix + table % (exchange,), member) for table in tables]


@dataclass(frozen=True)
class TaskMessage:
    """A message ready for LPUSH, and the queue it is declared on."""

    task_id: str
    queue: Queue
    key: str
    payload: str
    event: tuple[str, str] | None = None
    """The `task-sent` event's channel and envelope, when events are on."""


def _direct_queue(route: dict[str, Any]) -> Queue | None:
    """The queue `send_task` would push to through the anonymous exchange, else None."""
    queue = route.get("queue")
    if not isinstance(queue, Queue) or isinstance(queue, Broadcast):
        return None
    # A queue declared to expire gets PEXPIREs with every message: `send_task` does those.
    expiring = getattr(queue, "expires", None) or (queue.queue_arguments or {}).get("x-expires")
    if set(route) - _ROUTE_OPTIONS or queue.bindings or expiring:
        return None
    exchange_type = route.get("exchange_type") or queue.exchange.type
    explicit = route.get("exchange") and route.get("routing_key")
    if exchange_type != "direct" or explicit:
        return None
    return queue


class MessageBuilder:
    """Builds Redis-broker messages for the gateway's Celery app."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        options = dict(app.conf.broker_transport_options or {})
        self._rules = KeyRules.of(options)
        self._events = bool(app.conf.task_send_sent_event)
        # Read once: a Celery setting costs microseconds a lookup, four a message.
        self._repr_levels = app.conf.task_repr_maxlevels
        self._delivery_mode = app.conf.task_default_delivery_mode
        url = str(app.conf.broker_write_url or app.conf.broker_url)
        self._event_channel = sent_event_channel(options, broker_db(url))

    @property
    def rules(self) -> KeyRules:
        """The key rules in force."""
        return self._rules

    def build(self, task_id: str, submission: Submission) -> TaskMessage | None:
        """The message `send_task` would store; None when only `send_task` can route it."""
        options = dict(submission.options)
        options.pop("retry_policy", None)
        headers: dict[str, str] = options.pop("headers", None) or {}
        timing = {name: options.pop(name, None) for name in ("countdown", "eta", "expires")}
        amqp: Any = self._app.amqp
        route = amqp.router.route(options, submission.task, submission.args, submission.kwargs)
        queue = _direct_queue(route)
        if queue is None or (self._events and self._event_channel is None):
            return None
        message = amqp.as_task_v2(
            task_id,
            submission.task,
            submission.args,
            submission.kwargs,
            reply_to=self._app.thread_oid,
            # as_task_v2's own rendering, with the setting it would read twice read once
            argsrepr=saferepr(submission.args, amqp.argsrepr_maxsize, maxlevels=self._repr_levels),
            kwargsrepr=saferepr(
                submission.kwargs, amqp.kwargsrepr_maxsize, maxlevels=self._repr_levels
            ),
            ignore_result=None,
            create_sent_event=self._events,
            **timing,
        )
        envelope = self._envelope(message, queue, route.get("priority"), headers, timing["expires"])
        key = self._rules.queue_key(queue.name, int(envelope["properties"]["priority"]))
        event = None
        if self._event_channel is not None and message.sent_event is not None:
            payload = sent_event_payload(self._app, message.sent_event, queue.name)
            event = (self._event_channel, payload)
        return TaskMessage(task_id, queue, key, encode_envelope(envelope), event)

    def _envelope(
        self,
        message: Any,
        queue: Queue,
        priority: int | None,
        headers: dict[str, str],
        expires: datetime | None,
    ) -> dict[str, Any]:
        """What kombu's Producer.publish and the virtual channel add around the message."""
        message_headers, properties, body, _sent_event = message
        message_headers.update(headers)
        mode = queue.exchange.delivery_mode or self._delivery_mode
        properties["delivery_mode"] = maybe_delivery_mode(mode)
        if expires is not None:
            seconds = max((expires - self._app.now()).total_seconds(), 0)
            properties["expiration"] = str(int(seconds * 1000))
        properties["delivery_info"] = {"exchange": "", "routing_key": queue.name}
        properties["priority"] = priority or 0
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = str(uuid.uuid4())
        content_type, content_encoding, data = serialize(body, serializer="json")
        raw = data.encode(content_encoding) if isinstance(data, str) else data
        return {
            "body": base64.b64encode(raw).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": message_headers,
            "properties": properties,
        }
