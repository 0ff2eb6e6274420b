"""The `task-sent` event `send_task` emits when `task_send_sent_event` is on.

Flower's PENDING rows and celery-exporter's `celery_task_sent_total` count these.
On a Redis broker Celery's event exchange `celeryev` is a fanout, published with
Redis PUBLISH on `<global_keyprefix>/<db>.celeryev/task.sent` (kombu's fanout
prefix and patterns, both on by default), in the same envelope kombu gives any
message; the event itself is Celery's `Event`, stamped as its EventDispatcher does.
"""

import base64
import os
from typing import Any, cast
from urllib.parse import urlsplit

from celery import Celery
from celery.events.event import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as encode_envelope

from taskgate.server.ids import random_uuid

EXCHANGE, ROUTING_KEY = "celeryev", "task.sent"
_TRANSIENT = 1  # EventDispatcher's delivery_mode


def broker_db(url: str) -> int:
    """The database number of a redis:// URL, or of a sentinel:// list's first URL, as
    kombu reads it (0 when absent)."""
    return int(urlsplit(url.split(";", maxsplit=1)[0]).path.strip("/") or 0)


def sent_event_channel(transport_options: dict[str, Any], db: int) -> str | None:
    """Where the event is PUBLISHed; None when the fanout prefix is customised
    (the event then stays with `send_task`, which knows every variant)."""
    prefix = transport_options.get("fanout_prefix", True)
    patterns = transport_options.get("fanout_patterns", True)
    if prefix is not True or patterns is not True:
        return None
    keyprefix = str(transport_options.get("global_keyprefix", ""))
    return f"{keyprefix}/{db}.{EXCHANGE}/{ROUTING_KEY}"


def sent_event_payload(app: Celery, fields: dict[str, Any], queue: str) -> str:
    """The envelope of the `task-sent` event for one task, as kombu would store it."""
    hostname = anon_nodename()
    event = Event(
        "task-sent",
        hostname=hostname,
        utcoffset=utcoffset(),
        pid=os.getpid(),
        clock=cast(Any, app).clock.forward(),  # Celery's Lamport clock
        **fields,
        queue=queue,
        exchange="",
        routing_key=queue,
    )
    content_type, content_encoding, data = serialize(event, serializer="json")
    raw = data.encode(content_encoding) if isinstance(data, str) else data
    return str(
        encode_envelope(
            {
                "body": base64.b64encode(raw).decode(),
                "content-encoding": content_encoding,
                "content-type": content_type,
                "headers": {"hostname": hostname},
                "properties": {
                    "delivery_mode": _TRANSIENT,
                    "delivery_info": {"exchange": EXCHANGE, "routing_key": ROUTING_KEY},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": random_uuid(),
                },
            }
        )
    )
