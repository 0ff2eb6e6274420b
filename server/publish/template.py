"""What stays the same between messages of one task name and route, built once.

`as_task_v2`, the router and the envelope cost more than half of building a
message, yet for one task name, queue and priority only the task id, the
arguments, their reprs, the caller's headers and the delivery tag change. A
template is a message Celery built for a placeholder id; a message from it is
that message with those fields put in. Which headers and properties carry the
id is read from the template itself, so a Celery that names more of them is
followed, not assumed.

The template is also kept encoded, cut where those fields go (its layout): a
message is then its fields encoded and joined between the cuts, the same text
that encoding the whole envelope gives, without encoding its twenty constant
fields again.
"""

import base64
import re
from dataclasses import dataclass
from typing import Any

from kombu import Queue
from kombu.serialization import dumps as serialize
from kombu.utils.json import JSONEncoder

from taskgate.server.ids import random_uuid

PLACEHOLDER_ID = "00000000-0000-4000-8000-000000000000"

_ENCODER = JSONEncoder()
"""kombu's JSON encoder with the defaults `kombu.utils.json.dumps` makes one with at
every call: the same text, without making an encoder a message."""


def encode_json(value: Any) -> str:
    """`value` as `kombu.utils.json.dumps` writes it."""
    return str(_ENCODER.encode(value))


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


def _slot(name: str) -> str:
    return f"\x00taskgate-slot:{name}\x00"


_SLOTS = re.compile(r'"\\u0000taskgate-slot:([a-z_]+)\\u0000"')
_EXTRA = "extra_headers"  # the caller's headers, after the template's own


@dataclass(frozen=True)
class Layout:
    """The encoded template, cut where a message's own fields go."""

    pieces: tuple[str, ...]
    """Constant text, then a slot's name, then text, ... ending with text."""

    @classmethod
    def of(
        cls, envelope: Envelope, id_headers: tuple[str, ...], id_properties: tuple[str, ...]
    ) -> "Layout | None":
        """The layout of `envelope`; None when its text cannot be cut cleanly."""
        headers = {**envelope.headers, **dict.fromkeys(id_headers, _slot("id"))}
        headers |= {"argsrepr": _slot("argsrepr"), "kwargsrepr": _slot("kwargsrepr")}
        headers[_slot(_EXTRA)] = None
        properties = {**envelope.properties, **dict.fromkeys(id_properties, _slot("id"))}
        properties["delivery_tag"] = _slot("delivery_tag")
        content_type, content_encoding, data = serialize(envelope.body, serializer="json")
        if content_encoding != "utf-8" or data != encode_json(envelope.body):
            return None  # another JSON serializer is registered: let kombu encode
        text = encode_json(
            {"body": _slot("body"), "content-encoding": content_encoding,
             "content-type": content_type, "headers": headers, "properties": properties}
        )  # fmt: skip
        # The caller's headers go where the marker entry is, after the template's own.
        extra = f", {encode_json(_slot(_EXTRA))}: null"
        if text.count(extra) != 1:
            return None
        pieces = tuple(_SLOTS.split(text.replace(extra, encode_json(_slot(_EXTRA)))))
        expected = ["id"] * (len(id_headers) + len(id_properties))
        expected += ["argsrepr", "kwargsrepr", _EXTRA, "delivery_tag", "body"]
        if sorted(pieces[1::2]) != sorted(expected):
            return None  # a slot's name in a constant field (a task name...): no cut
        return cls(pieces)

    def join(self, fields: dict[str, str]) -> str:
        """The message with `fields` (each already encoded) in their slots."""
        pieces = self.pieces
        parts = [pieces[0]]
        for index in range(1, len(pieces), 2):
            parts += (fields[pieces[index]], pieces[index + 1])
        return "".join(parts)


@dataclass(frozen=True)
class MessageTemplate:
    """A message of one task name and route, its id a placeholder, its arguments empty."""

    queue: Queue
    key: str
    envelope: Envelope
    id_headers: tuple[str, ...]
    id_properties: tuple[str, ...]
    layout: Layout | None = None

    @classmethod
    def of(cls, queue: Queue, key: str, envelope: Envelope) -> "MessageTemplate":
        """The template of `envelope`, built by Celery for PLACEHOLDER_ID."""
        id_headers = tuple(
            name for name, value in envelope.headers.items() if value == PLACEHOLDER_ID
        )
        id_properties = tuple(
            name for name, value in envelope.properties.items() if value == PLACEHOLDER_ID
        )
        layout = Layout.of(envelope, id_headers, id_properties)
        return cls(queue, key, envelope, id_headers, id_properties, layout)

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
        properties["delivery_tag"] = random_uuid()
        _, _, embed = self.envelope.body
        return Envelope(message_headers, properties, (args, kwargs, embed))

    def payload(
        self,
        task_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        reprs: tuple[str, str],
        headers: dict[str, str],
    ) -> str:
        """This template's message for one task, encoded as kombu's Redis transport
        stores it: `fill`'s envelope, encoded, from the layout when it can be."""
        if self.layout is None or not headers.keys().isdisjoint(self.envelope.headers):
            # A caller's header that replaces one of the template's keeps its place.
            return encode_json(self.fill(task_id, args, kwargs, reprs, headers).encoded())
        _, _, embed = self.envelope.body
        body = base64.b64encode(encode_json((args, kwargs, embed)).encode()).decode()
        extra = "".join(
            f", {encode_json(name)}: {encode_json(value)}" for name, value in headers.items()
        )
        fields = {
            "id": encode_json(task_id),
            "argsrepr": encode_json(reprs[0]),
            "kwargsrepr": encode_json(reprs[1]),
            _EXTRA: extra,
            "delivery_tag": encode_json(random_uuid()),
            "body": encode_json(body),
        }
        return self.layout.join(fields)
