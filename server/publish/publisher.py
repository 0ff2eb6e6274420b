"""Publish a submission: taskgate's own Redis path where it applies, else `send_task`."""

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from celery import Celery

from taskgate.server.dispatch import Dispatcher, left_since, retry_within
from taskgate.server.errors import GatewayError, Unavailable
from taskgate.server.publish.broker import Push, RedisBroker
from taskgate.server.publish.message import MessageBuilder, TaskMessage
from taskgate.server.records import DispatchRecord, DispatchRecords
from taskgate.server.redis_urls import SENTINEL_SCHEME, is_sentinel
from taskgate.server.requests import Submission

logger = logging.getLogger(__name__)

T = TypeVar("T")

_REDIS_SCHEMES = ("redis", "rediss", SENTINEL_SCHEME)

Publication = tuple[str, Submission, DispatchRecord]
"""A task id, its submission and its dispatch record, as `Publisher.publish` takes them."""


def own_path_broker_url(app: Celery) -> str | None:
    """The broker URL when taskgate can publish to it itself; None keeps `send_task`.

    The own path writes exactly what kombu's Redis transport writes for protocol 2,
    JSON and no compression, to one Redis named by URL or to the primary a Sentinel set
    names; a failover list of Redis URLs, TLS options given apart from the URL, other
    formats or another broker stay with Celery.
    """
    conf = app.conf
    url = str(conf.broker_write_url or conf.broker_url or "")
    options = dict(conf.broker_transport_options or {})
    eligible = (
        url.partition("://")[0] in _REDIS_SCHEMES
        and (";" not in url or is_sentinel(url))
        and not conf.broker_use_ssl
        and conf.task_protocol == 2
        and conf.task_serializer == "json"
        and not conf.task_compression
        and options.get("body_encoding", "base64") == "base64"
    )
    return url if eligible else None


class Publisher:
    """Records and publishes submissions; every try of one task id carries that id."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        records: DispatchRecords,
        builder: MessageBuilder | None = None,
        broker: RedisBroker | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._records = records
        self._builder = builder
        self._broker = broker

    async def publish(
        self, task_id: str, submission: Submission, record: DispatchRecord, time_left: float | None
    ) -> None:
        """Record the task and queue it once; raises Unavailable when that failed.

        On the own path a retry (after a timeout too) is safe: the script is a no-op
        for a task id already published. On the `send_task` path the record goes
        first, so a fast worker's result never meets a NOT_FOUND.
        """
        broker, builder = self._broker, self._builder
        message = None if builder is None else builder.build(task_id, submission)
        if broker is None or message is None:
            await self._records.put(task_id, record)
            await self._unrecorded_if_failed(
                task_id, self._dispatcher.publish(task_id, submission, time_left)
            )
            return
        write = self._records.write(task_id, record)
        # Sharing the backend's database, the script writes the record: both or neither.
        in_script = write if broker.holds_records else None
        if in_script is None:
            await self._records.put(task_id, record)
        push = retry_within(
            lambda: broker.push(message, write.ttl, in_script),
            self._dispatcher.retries_for(submission),
            time_left,
        )
        pushed = await (push if in_script else self._unrecorded_if_failed(task_id, push))
        if not pushed:
            logger.info("task %s was published already: not queued again", task_id)

    async def publish_many(
        self, items: Sequence[Publication], time_left: float | None
    ) -> list[GatewayError | None]:
        """`publish` for each of `items` (task id, submission, record); each one's
        error, or None when it is queued.

        Where the script writes the records, the messages of the items that take the
        configured retry policy go in one pipeline, retried together like one publish;
        every other item is published on its own, concurrently.
        """
        started = asyncio.get_running_loop().time()
        together: list[tuple[int, Push]] = []
        alone: list[int] = []
        for index, (task_id, submission, record) in enumerate(items):
            message = self._together_message(task_id, submission)
            if message is None:
                alone.append(index)
            else:
                write = self._records.write(task_id, record)
                together.append((index, (message, write.ttl, write)))
        time_left = left_since(time_left, started)  # building them took time too
        alone_outcomes, failures = await asyncio.gather(
            asyncio.gather(*(_error_or_none(self.publish(*items[i], time_left)) for i in alone)),
            self.push_together([push for _, push in together], time_left),
        )
        outcomes: dict[int, GatewayError | None] = dict(zip(alone, alone_outcomes, strict=True))
        for position, (index, _) in enumerate(together):
            outcomes[index] = failures.get(position)
        return [outcomes[index] for index in range(len(items))]

    def _together_message(self, task_id: str, submission: Submission) -> TaskMessage | None:
        """The message of an item that can go with the others; None: it goes alone (a
        retry policy of its own, a record written apart, a route only kombu knows)."""
        broker, builder = self._broker, self._builder
        if broker is None or builder is None or not broker.holds_records:
            return None
        if submission.options.get("retry_policy"):
            return None
        return builder.build(task_id, submission)

    async def push_together(
        self, pushes: list[Push], time_left: float | None
    ) -> dict[int, GatewayError]:
        """Push all of `pushes`, retried as one publish; the error of each one not queued.

        A retry pushes them all again: those that went out already are no-ops (the
        script's marker), so a refusal or a timeout midway loses none and doubles none.
        """
        broker = self._broker
        if not pushes or broker is None:
            return {}
        queued = [False] * len(pushes)
        broken: dict[int, GatewayError] = {}  # failed for a reason of their own

        async def attempt() -> None:
            refused = None
            for position, outcome in enumerate(await broker.push_many(pushes)):
                if isinstance(outcome, Unavailable):
                    refused = outcome
                elif isinstance(outcome, GatewayError):
                    broken[position] = outcome
                else:
                    queued[position] = True
            if refused is not None:
                raise refused

        failure: Unavailable | None = None
        try:
            await retry_within(attempt, self._dispatcher.default_retries, time_left)
        except Unavailable as exc:
            failure = exc
        errors = {
            position: broken.get(position, failure)
            for position, done in enumerate(queued)
            if not done
        }
        return {position: error for position, error in errors.items() if error is not None}

    async def _unrecorded_if_failed(self, task_id: str, publish: Awaitable[T]) -> T:
        """Await `publish`; when it fails, drop the record written before it, so the
        id reads NOT_FOUND, not PENDING for ever. Should a timed-out try have landed
        after all, the id reads NOT_FOUND only until a worker stores its first state;
        a keyed retry writes the record again."""
        try:
            return await publish
        except Unavailable:
            await self._records.forget(task_id)
            raise

    async def close(self) -> None:
        """Release the broker connections of the own path."""
        if self._broker is not None:
            await self._broker.close()


async def _error_or_none(publish: Awaitable[None]) -> GatewayError | None:
    try:
        await publish
    except GatewayError as exc:
        return exc
    return None
