"""What stays the same between messages of one task name and route, built once.

`as_task_v2`, the router and the envelope cost more than half of building a
message, yet for one task name, queue and priority only the task id, the
arguments, their reprs, the caller's headers and the delivery tag change. A
template is a message Celery built for a placeholder id; a message from it is
that message with those fields put in. Which headers and properties carry the
id is read from the template itself, so a Celery that names more of them is
followed, not assumed.
"""

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from kombu import Queue
from kombu.serialization import dumps as serialize

PLACEHOLDER_ID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Envelope:
    """A message before it is encoded: kombu's envelope fields, in kombu's order."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: tuple[Any, ...]

    def encoded(self) -> dict[str, Any]:
        """The envelope as kombu's Redis transport stores it, the body in base64."""
        content_type, content_encoding, data = serialize(self.body, serializer="json")
        raw = data.encode(content_encoding) if isinstance(data, str) else data
        return {
            "body": base64.b64encode(raw).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": self.headers,
            "properties": self.properties,
        }


@dataclass(frozen=True)
class MessageTemplate:
    """A message of one task name and route, its id a placeholder, its arguments empty."""

    queue: Queue
    key: str
    envelope: Envelope
    id_headers: tuple[str, ...]
    id_properties: tuple[str, ...]

    @classmethod
    def of(cls, queue: Queue, key: str, envelope: Envelope) -> "MessageTemplate":
        """The template of `envelope`, built by Celery for PLACEHOLDER_ID."""
        return cls(
            queue,
            key,
            envelope,
            tuple(name for name, value in envelope.headers.items() if value == PLACEHOLDER_ID),
            tuple(name for name, value in envelope.properties.items() if value == PLACEHOLDER_ID),
        )

    def fill(
        self,
        task_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        reprs: tuple[str, str],
        headers: dict[str, str],
    ) -> Envelope:
        """This template's message for one task: what `as_task_v2` would have built."""
        message_headers = dict(self.envelope.headers)
        for name in self.id_headers:
            message_headers[name] = task_id
        message_headers["argsrepr"], message_headers["kwargsrepr"] = reprs
        message_headers.update(headers)
        properties = dict(self.envelope.properties)
        for name in self.id_properties:
            properties[name] = task_id
        properties["delivery_tag"] = str(uuid.uuid4())
        _, _, embed = self.envelope.body
        return Envelope(message_headers, properties, (args, kwargs, embed))
