"""Submit: check a submission, record it, publish it, and deduplicate by idempotency key."""

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from taskgate.server.auth import current_principal
from taskgate.server.catalog import Catalog
from taskgate.server.dispatch import Dispatcher, left_since
from taskgate.server.errors import GatewayError, IdempotencyKeyReused, InvalidArgument, Unavailable
from taskgate.server.idempotency import Claim, IdempotencyKeys, fingerprint
from taskgate.server.ids import random_uuid
from taskgate.server.observability.tracing import TRACING, with_trace_headers
from taskgate.server.publish.publisher import Publication, Publisher
from taskgate.server.records import DispatchRecord
from taskgate.server.requests import Submission

# How often a call re-reads a key that another call is publishing right now.
_CLAIM_POLL_SECONDS = 0.05
# The lease of a call without a deadline: longer than its slowest publish (the
# record's write, then the bounded publish retries, each up to a socket timeout).
LONGEST_LEASE_SECONDS = 30.0
_QUEUES_KEPT = 1024


@dataclass(frozen=True)
class Submitted:
    """The outcome of a Submit."""

    task_id: str
    deduplicated: bool = False


def _start_delay(submission: Submission) -> float:
    """Seconds until the task may start, from `countdown` or `eta`."""
    if "countdown" in submission.options:
        return float(submission.options["countdown"])
    if "eta" in submission.options:
        eta: datetime = submission.options["eta"]
        return (eta - datetime.now(UTC)).total_seconds()
    return 0.0


def _record_of(submission: Submission) -> DispatchRecord:
    """The dispatch record of `submission`, published now."""
    return DispatchRecord(
        submission.task, time.time(), submission.idempotency_key, _start_delay(submission)
    )


async def _or_error(submitting: Awaitable[Submitted]) -> Submitted | GatewayError:
    try:
        return await submitting
    except GatewayError as exc:
        return exc


class Submitter:
    """Turns validated submissions into published Celery tasks."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        dispatcher: Dispatcher,
        publisher: Publisher,
        keys: IdempotencyKeys,
        max_start_delay: float | None = None,
        longest_lease: float = LONGEST_LEASE_SECONDS,
    ) -> None:
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._keys = keys
        self._max_start_delay = max_start_delay
        self._longest_lease = longest_lease
        self._settling: set[asyncio.Future[None]] = set()  # publishes outliving their caller
        # Queues Celery may publish to stay so (its settings are read once, its queues
        # only grow), and asking costs microseconds a submission.
        self._known_queues: set[str] = set()

    async def submit(self, submission: Submission, time_left: float | None = None) -> Submitted:
        """Queue the task, or find the one its idempotency key already queued.

        `time_left` is the call's remaining deadline: publish retries stop within it.
        """
        self._admit(submission)
        return await self._submit_admitted(submission, time_left)

    async def _submit_admitted(self, submission: Submission, time_left: float | None) -> Submitted:
        if not submission.idempotency_key:
            task_id = random_uuid()
            await self._dispatch(task_id, submission, time_left)
            return Submitted(task_id)
        return await self._submit_once(submission, submission.idempotency_key, time_left)

    async def submit_many(
        self, submissions: Sequence[Submission], time_left: float | None = None
    ) -> list[Submitted | GatewayError]:
        """`submit` for each of `submissions`: each one's outcome, or its error.

        The submissions without an idempotency key are published together (one
        pipeline, where the own publish path takes them); keyed ones, and all of them
        while tracing spans are on, one by one, concurrently.
        """
        started = asyncio.get_running_loop().time()
        outcomes: dict[int, Submitted | GatewayError] = {}
        fresh: list[tuple[int, Publication]] = []
        # Keyed ones claim their key first; with spans, each publish is in its own.
        one_by_one: list[int] = []
        for index, submission in enumerate(submissions):
            try:
                self._admit(submission)
            except GatewayError as exc:
                outcomes[index] = exc
                continue
            if submission.idempotency_key or TRACING.spans_on:
                one_by_one.append(index)
            else:
                task_id = random_uuid()
                fresh.append((index, (task_id, submission, _record_of(submission))))
        time_left = left_since(time_left, started)  # checking them took time too
        alone, published = await asyncio.gather(
            asyncio.gather(
                *(_or_error(self._submit_admitted(submissions[i], time_left)) for i in one_by_one)
            ),
            self._publish_fresh([publication for _, publication in fresh], time_left),
        )
        outcomes.update(zip(one_by_one, alone, strict=True))
        for (index, (task_id, _, _)), failure in zip(fresh, published, strict=True):
            outcomes[index] = Submitted(task_id) if failure is None else failure
        return [outcomes[index] for index in range(len(submissions))]

    async def _publish_fresh(
        self, publications: list[Publication], time_left: float | None
    ) -> list[GatewayError | None]:
        """Publish unkeyed submissions together, each carrying its caller's trace headers."""
        traced = [
            (task_id, with_trace_headers(submission, TRACING.incoming_headers()), record)
            for task_id, submission, record in publications
        ]
        return await self._publisher.publish_many(traced, time_left) if traced else []

    def _admit(self, submission: Submission) -> None:
        """Refuse a submission the catalog, the caller's token or the settings forbid."""
        self._catalog.check(submission.task)
        current_principal.get().require_task(submission.task)
        queue = submission.options.get("queue")
        if queue is not None and queue not in self._known_queues:
            if not self._dispatcher.has_queue(queue):
                raise InvalidArgument(
                    "options.queue", f"no queue named {queue!r} is configured (task_queues)"
                )
            if len(self._known_queues) < _QUEUES_KEPT:
                self._known_queues.add(queue)
        self._refuse_redelivery_loop(submission)

    def _refuse_redelivery_loop(self, submission: Submission) -> None:
        """A worker holds a countdown/eta task unacknowledged until it starts, and a Redis
        broker hands a message held past its visibility timeout to another worker, again
        and again (Celery's Redis caveat), unless the worker keeps it fresh as taskgate's
        workers do (worker/heartbeat.py): operators of other workers set the limit."""
        limit = self._max_start_delay
        if limit is None or _start_delay(submission) <= limit:
            return
        field = "options.countdown" if "countdown" in submission.options else "options.eta"
        raise InvalidArgument(
            field, f"starts more than {limit:g}s from now (TASKGATE_MAX_START_DELAY)"
        )

    async def _dispatch(
        self, task_id: str, submission: Submission, time_left: float | None
    ) -> None:
        with TRACING.publishing(submission.task, task_id) as trace_headers:
            traced = with_trace_headers(submission, trace_headers)
            await self._publisher.publish(task_id, traced, _record_of(submission), time_left)

    async def _submit_once(
        self, submission: Submission, key: str, time_left: float | None
    ) -> Submitted:
        digest = fingerprint(submission)
        while True:
            now = time.time()
            mine = Claim(random_uuid(), digest, now, lease_until=now + self._lease(time_left))
            existing = await self._keys.claim(key, mine)
            # Our own claim comes back when a lost reply made redis-py send the claim again.
            if existing is None or existing.task_id == mine.task_id:
                return await self._publish_claimed(key, mine, submission, time_left, False)
            if existing.fingerprint != digest:
                raise IdempotencyKeyReused(key, existing.task_id)
            if existing.published:
                return Submitted(existing.task_id, deduplicated=True)
            if existing.lapsed(now):
                # Nobody publishes it any more: publish it now, under the same task id.
                taken = replace(mine, task_id=existing.task_id)
                if await self._keys.swap(key, existing, taken):
                    return await self._publish_claimed(key, taken, submission, time_left, True)
            await asyncio.sleep(_CLAIM_POLL_SECONDS)  # another call is publishing it now

    def _lease(self, time_left: float | None) -> float:
        """How long a claim's holder may take to publish: its deadline, within bounds."""
        return self._longest_lease if time_left is None else min(time_left, self._longest_lease)

    async def _publish_claimed(
        self,
        key: str,
        claim: Claim,
        submission: Submission,
        time_left: float | None,
        deduplicated: bool,
    ) -> Submitted:
        # Shielded: a caller that goes away mid-publish must not leave the key claimed
        # but unsettled, or every retry would wait for the claim's lease to run out.
        publishing = asyncio.ensure_future(
            self._publish_and_settle(key, claim, submission, time_left)
        )
        self._settling.add(publishing)
        publishing.add_done_callback(self._settling.discard)
        await asyncio.shield(publishing)
        return Submitted(claim.task_id, deduplicated)

    async def _publish_and_settle(
        self, key: str, claim: Claim, submission: Submission, time_left: float | None
    ) -> None:
        try:
            await self._dispatch(claim.task_id, submission, time_left)
        except Unavailable:
            # A failed publish may still have reached the broker (a timeout is not a
            # refusal): the key keeps its task id, released so that a retry publishes
            # the same id at once; the workers' guard runs it once either way.
            await self._keys.swap(key, claim, claim.released())
            raise
        await self._keys.mark_published(key, claim)
