"""The protocol-v2 message kombu's Redis transport would store, built without I/O.

Every piece that decides what goes on the wire is Celery's or kombu's own: the
router (`app.amqp.router.route`), the message layout (`app.amqp.as_task_v2`), the
body serializer (`kombu.serialization.dumps`), the envelope encoder
(`kombu.utils.json`'s) and the transport's priority and key rules; this
module only applies them in the order `send_task` does.
"""

import bisect
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from celery import Celery
from celery.app.routes import MapRoute
from kombu import Queue
from kombu.common import Broadcast
from kombu.entity import maybe_delivery_mode
from kombu.transport.redis import PRIORITY_STEPS, Channel

from taskgate.server.ids import random_uuid
from taskgate.server.publish.events import broker_db, sent_event_channel, sent_event_payload
from taskgate.server.publish.reprs import args_repr, kwargs_repr
from taskgate.server.publish.template import PLACEHOLDER_ID, Envelope, MessageTemplate, encode_json
from taskgate.server.requests import Submission

# Route options the fast path reproduces; any other (serializer, compression,
# delivery_mode, exchange lookups...) sends the task through `send_task`.
_ROUTE_OPTIONS = frozenset({"queue", "priority", "exchange", "routing_key", "exchange_type"})
_MIN_PRIORITY, _MAX_PRIORITY = 0, 9  # kombu's virtual transport clamps to this range
_TEMPLATES_KEPT = 1024  # (task name, route) pairs whose message layout is kept
_NO_TIMING: dict[str, Any] = {"countdown": None, "eta": None, "expires": None}


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
        self._templates: dict[tuple[Any, ...], MessageTemplate | None] = {}
        # A router function may route by the arguments: only map routes go by name alone.
        routes = cast(Any, app.amqp).router.routes
        self._by_name = all(isinstance(route, MapRoute) for route in routes)

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
        if self._events and self._event_channel is None:
            return None
        if self._events or not self._by_name or any(v is not None for v in timing.values()):
            # Times are computed from now, events carry the arguments: built afresh.
            return self._build_afresh(task_id, submission, options, headers, timing)
        template = self._template(submission.task, options)
        if template is None:
            return None
        reprs = self._reprs(submission)
        payload = template.payload(task_id, submission.args, submission.kwargs, reprs, headers)
        return TaskMessage(task_id, template.queue, template.key, payload)

    def _template(self, task: str, options: dict[str, Any]) -> MessageTemplate | None:
        key = (task, *sorted(options.items()))
        if key not in self._templates:
            if len(self._templates) >= _TEMPLATES_KEPT:  # many names: start afresh
                self._templates.clear()
            parts = self._parts(PLACEHOLDER_ID, Submission(task, [], {}), options, _NO_TIMING)
            self._templates[key] = None if parts is None else MessageTemplate.of(*parts[:3])
        return self._templates[key]

    def _build_afresh(
        self,
        task_id: str,
        submission: Submission,
        options: dict[str, Any],
        headers: dict[str, str],
        timing: dict[str, Any],
    ) -> TaskMessage | None:
        parts = self._parts(task_id, submission, options, timing)
        if parts is None:
            return None
        queue, key, envelope, sent_event = parts
        envelope.headers.update(headers)
        event = None
        if self._event_channel is not None and sent_event is not None:
            event = (self._event_channel, sent_event_payload(self._app, sent_event, queue.name))
        return TaskMessage(task_id, queue, key, _encoded(envelope), event)

    def _parts(
        self, task_id: str, submission: Submission, options: dict[str, Any], timing: dict[str, Any]
    ) -> tuple[Queue, str, Envelope, dict[str, Any] | None] | None:
        """Celery's message for the route of `options`: queue, key, envelope, sent event."""
        amqp: Any = self._app.amqp
        route = amqp.router.route(options, submission.task, submission.args, submission.kwargs)
        queue = _direct_queue(route)
        if queue is None:
            return None
        argsrepr, kwargsrepr = self._reprs(submission)
        message = amqp.as_task_v2(
            task_id,
            submission.task,
            submission.args,
            submission.kwargs,
            reply_to=self._app.thread_oid,
            # as_task_v2's own rendering, with the setting it would read twice read once
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
            ignore_result=None,
            create_sent_event=self._events,
            **timing,
        )
        message_headers, properties, body, sent_event = message
        self._add_properties(properties, queue, route.get("priority"), timing["expires"])
        key = self._rules.queue_key(queue.name, int(properties["priority"]))
        return queue, key, Envelope(message_headers, properties, body), sent_event

    def _reprs(self, submission: Submission) -> tuple[str, str]:
        """`argsrepr` and `kwargsrepr`, rendered as `as_task_v2` renders them."""
        amqp: Any = self._app.amqp
        levels = self._repr_levels
        return (
            args_repr(submission.args, amqp.argsrepr_maxsize, levels),
            kwargs_repr(submission.kwargs, amqp.kwargsrepr_maxsize, levels),
        )

    def _add_properties(
        self,
        properties: dict[str, Any],
        queue: Queue,
        priority: int | None,
        expires: datetime | None,
    ) -> None:
        """What kombu's Producer.publish and the virtual channel add to the properties."""
        mode = queue.exchange.delivery_mode or self._delivery_mode
        properties["delivery_mode"] = maybe_delivery_mode(mode)
        if expires is not None:
            seconds = max((expires - self._app.now()).total_seconds(), 0)
            properties["expiration"] = str(int(seconds * 1000))
        properties["delivery_info"] = {"exchange": "", "routing_key": queue.name}
        properties["priority"] = priority or 0
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = random_uuid()


def _encoded(envelope: Envelope) -> str:
    return encode_json(envelope.encoded())
