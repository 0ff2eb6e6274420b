"""Where the own publish path keeps a copy of each message until a worker runs it.

The publish script (server/publish/broker.py) adds the task id to the `taskgate:inflight`
sorted set, scored by its publish time, and stores the message and its queue list in the
hash `taskgate:inflight:<task id>`; the reclaimer (server/publish/reclaim.py) reads them.
kombu's global_keyprefix applies, as to every key on the broker.
"""

import json
from dataclasses import dataclass

from celery import Celery
from kombu.transport.redis import Channel
from kombu.utils.json import dumps, loads

INFLIGHT = "taskgate:inflight"
RECLAIM_LOCK = "taskgate:reclaiming:"


@dataclass(frozen=True)
class InflightKeys:
    """The broker keys of the in-flight copies, and kombu's `unacked` hash."""

    global_keyprefix: str = ""
    unacked_name: str = Channel.unacked_key

    @property
    def index(self) -> str:
        """The sorted set of task ids in flight, scored by publish time (seconds)."""
        return self.global_keyprefix + INFLIGHT

    def copy(self, task_id: str) -> str:
        """The hash holding the message of `task_id` (`message`) and its list (`queue`)."""
        return f"{self.global_keyprefix}{INFLIGHT}:{task_id}"

    def lock(self, task_id: str) -> str:
        """Taken by the gateway that pushes `task_id` again, so that only one does."""
        return f"{self.global_keyprefix}{RECLAIM_LOCK}{task_id}"

    @property
    def unacked(self) -> str:
        """kombu's hash of messages a worker holds, by delivery tag."""
        return self.global_keyprefix + self.unacked_name


def inflight_keys(app: Celery) -> InflightKeys | None:
    """The keys for the workers' transport options; None when kombu keeps no `unacked`
    (`ack_emulation` off), where a held message could not be told from a lost one."""
    options = dict(app.conf.broker_transport_options or {})
    if not options.get("ack_emulation", True):
        return None
    return InflightKeys(
        str(options.get("global_keyprefix", "")),
        str(options.get("unacked_key", Channel.unacked_key)),
    )


@dataclass(frozen=True)
class InFlight:
    """One in-flight copy: its task id, the list it went to and the message itself."""

    task_id: str
    queue: str
    message: str

    @property
    def delivery_tag(self) -> str:
        """The tag kombu files the message under in `unacked`."""
        return str(json.loads(self.message)["properties"]["delivery_tag"])

    @property
    def restored(self) -> str:
        """The message as kombu gives it back from `unacked` (a worker's visibility
        timeout, or its shutdown): flagged redelivered, as `_do_restore_message` does."""
        payload = loads(self.message)
        payload["headers"]["redelivered"] = True
        payload["properties"]["delivery_info"]["redelivered"] = True
        return str(dumps(payload))
