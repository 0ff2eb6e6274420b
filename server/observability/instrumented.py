"""The gateway's domain objects with taskgate's own series counted around them.

Subclasses, so that the domain modules stay free of metrics and app.py picks
the metered ones when it wires the gateway.
"""

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import grpc

from taskgate.server.errors import GatewayError, NotFound
from taskgate.server.gateway import Gateway, TaskView
from taskgate.server.observability import metrics
from taskgate.server.observability.grpc_names import go_code_name
from taskgate.server.publish.broker import Push
from taskgate.server.publish.publisher import Publisher
from taskgate.server.records import DispatchRecord
from taskgate.server.requests import Submission
from taskgate.server.submitter import Submitted, Submitter

_TASK_NAMES = metrics.BoundedLabel(limit=200)  # `tasks.*` admits names no one chose
_CALLERS = metrics.BoundedLabel(limit=100)


def count_limit(kind: str, caller: str) -> None:
    """One call of `caller` refused by the limit `kind`."""
    metrics.LIMITS_HIT.labels(kind, _CALLERS(caller)).inc()


def _outcome(error: Exception) -> str:
    code = error.code if isinstance(error, GatewayError) else grpc.StatusCode.INTERNAL.value[0]
    return go_code_name(code)


_SUBMITTED_KEPT = 1024  # (task, outcome) series whose label lookup is kept
_SUBMITTED: dict[tuple[str | None, str], Any] = {}


class MeteredSubmitter(Submitter):
    """Counts each submission by task name and outcome."""

    async def submit(self, submission: Submission, time_left: float | None = None) -> Submitted:
        try:
            submitted = await super().submit(submission, time_left)
        except Exception as exc:
            _count(submission.task, exc)
            raise
        _count(submission.task, submitted)
        return submitted

    async def submit_many(
        self, submissions: Sequence[Submission], time_left: float | None = None
    ) -> list[Submitted | GatewayError]:
        try:
            outcomes = await super().submit_many(submissions, time_left)
        except Exception as exc:  # a bug: each item of the batch ends with it
            for submission in submissions:
                _count(submission.task, exc)
            raise
        for submission, outcome in zip(submissions, outcomes, strict=True):
            _count(submission.task, outcome)
        return outcomes


def _count(task: str, outcome: Submitted | Exception) -> None:
    if isinstance(outcome, Submitted):
        _count_submitted(task, "deduplicated" if outcome.deduplicated else "queued")
    else:
        # A name outside the catalog is the caller's invention: never a label of its own.
        _count_submitted(None if isinstance(outcome, NotFound) else task, _outcome(outcome))


def _count_submitted(task: str | None, outcome: str) -> None:
    """One submission of `task` (None: a name outside the catalog) with `outcome`; its
    series looked up once."""
    series = _SUBMITTED.get((task, outcome))
    if series is None:
        label = "unknown" if task is None else _TASK_NAMES(task)
        series = metrics.TASKS_SUBMITTED.labels(label, outcome)
        if len(_SUBMITTED) < _SUBMITTED_KEPT:
            _SUBMITTED[(task, outcome)] = series
    series.inc()


class MeteredPublisher(Publisher):
    """Times each publish, retries included."""

    async def publish(
        self, task_id: str, submission: Submission, record: DispatchRecord, time_left: float | None
    ) -> None:
        with metrics.PUBLISH_SECONDS.time():
            await super().publish(task_id, submission, record, time_left)

    async def push_together(
        self, pushes: list[Push], time_left: float | None
    ) -> dict[int, GatewayError]:
        """Each message pushed together took the whole push."""
        started = time.perf_counter()
        try:
            return await super().push_together(pushes, time_left)
        finally:
            seconds = time.perf_counter() - started
            for _ in pushes:
                metrics.PUBLISH_SECONDS.observe(seconds)


class MeteredGateway(Gateway):
    """Counts the waits and the watch streams in progress."""

    async def result(self, task_id: str, until: float) -> TaskView:
        with metrics.WAITS_IN_PROGRESS.track_inprogress():
            return await super().result(task_id, until)

    async def result_of_new(self, task_id: str, task: str, until: float) -> TaskView:
        with metrics.WAITS_IN_PROGRESS.track_inprogress():
            return await super().result_of_new(task_id, task, until)

    async def watch(self, task_id: str) -> AsyncGenerator[TaskView, None]:
        with metrics.WATCH_STREAMS_OPEN.track_inprogress():
            async with aclosing(super().watch(task_id)) as views:
                async for view in views:
                    yield view
