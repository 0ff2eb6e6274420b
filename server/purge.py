"""`taskgate-purge QUEUE [QUEUE ...]`: empty queues on the Redis broker, for good.

`celery purge` deletes a queue's lists only. The gateway keeps an in-flight copy of each
message it publishes (server/publish/inflight.py), and its reclaimer takes a message that
is neither queued, held nor started for one lost on its way: it queues the purged
messages again. This command deletes each priority list of each queue and, in the same
transaction, the copies of the messages that were in them. It reads the broker URL and
transport options as the gateway does (CELERY_BROKER_URL, CELERY_CONFIG_MODULE).
"""

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from redis.sentinel import Sentinel

from taskgate.server.publish.inflight import InflightKeys, inflight_keys
from taskgate.server.publish.message import KeyRules
from taskgate.server.redis_urls import is_sentinel, parse_sentinel_url
from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import ConfigurationError, create_app

_PAGE = 1000
_REDIS_SCHEMES = ("redis", "rediss", "sentinel")


def purge(
    client: redis.Redis, rules: KeyRules, keys: InflightKeys | None, queues: Sequence[str]
) -> dict[str, int]:
    """Delete `queues` (every priority list) and the in-flight copies of their messages;
    how many messages each queue held."""
    lists = {
        rules.queue_key(queue, step): queue for queue in queues for step in rules.priority_steps
    }
    copies = list(_copies_in(client, keys, set(lists))) if keys is not None else []
    with client.pipeline(transaction=True) as pipe:
        for key in lists:
            pipe.llen(key)
        pipe.delete(*lists)
        if keys is not None and copies:
            pipe.zrem(keys.index, *copies)
            pipe.delete(*(keys.copy(task_id) for task_id in copies))
        lengths = pipe.execute()[: len(lists)]
    held = dict.fromkeys(queues, 0)
    for queue, length in zip(lists.values(), lengths, strict=True):
        held[queue] += int(length)
    return held


def _copies_in(client: redis.Redis, keys: InflightKeys, lists: set[str]) -> Iterator[str]:
    """The task ids whose in-flight copy went to one of `lists`."""
    page: list[str] = []
    for member, _ in client.zscan_iter(keys.index, count=_PAGE):
        page.append(member.decode())
        if len(page) == _PAGE:
            yield from _of_lists(client, keys, lists, page)
            page = []
    yield from _of_lists(client, keys, lists, page)


def _of_lists(
    client: redis.Redis, keys: InflightKeys, lists: set[str], task_ids: list[str]
) -> Iterator[str]:
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hget(keys.copy(task_id), "queue")
        found = pipe.execute()
    for task_id, queue in zip(task_ids, found, strict=True):
        if queue is not None and queue.decode() in lists:
            yield task_id


def broker_client(url: str, options: dict[str, Any]) -> redis.Redis:
    """A client for the broker `url` names: one Redis, or the primary a Sentinel set names."""
    socket = {"socket_timeout": 5.0, "socket_connect_timeout": 4.0}
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **socket)
    found = parse_sentinel_url(url, options, "broker_url")
    kwargs = {**socket, **found.sentinel_kwargs}
    sentinel = Sentinel(list(found.sentinels), sentinel_kwargs=kwargs)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        found.master_name, db=found.db, username=found.username, password=found.password, **socket
    )
    return client


def main(argv: Sequence[str] | None = None) -> None:
    """Purge the queues named on the command line; one line for each."""
    parser = argparse.ArgumentParser(prog="taskgate-purge", description=__doc__.splitlines()[0])
    parser.add_argument("queues", nargs="+", metavar="QUEUE")
    queues = parser.parse_args(argv).queues
    try:
        app = create_app(CelerySettings.from_env(), load_tasks=False)
        url = str(app.conf.broker_url)
        if url.partition("://")[0] not in _REDIS_SCHEMES:
            raise ConfigurationError(
                "the broker is not Redis: nothing of taskgate's stays behind a purge there, "
                "use `celery purge`"
            )
        options = dict(app.conf.broker_transport_options or {})
        with broker_client(url, options) as client:
            held = purge(client, KeyRules.of(options), inflight_keys(app), queues)
    except ConfigurationError as exc:
        sys.exit(f"taskgate-purge: configuration error: {exc}")
    except redis.RedisError as exc:
        sys.exit(f"taskgate-purge: the broker cannot be reached: {exc}")
    for queue, count in held.items():
        print(f"{queue}: {count} messages purged")


if __name__ == "__main__":
    main()
