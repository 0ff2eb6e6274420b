"""Runs the phases: sequential round trips, and throughput with many tasks in flight.

Every call's value is checked against the sum it must be; a wrong answer or a
failed call is counted and reported, never timed.
"""

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from time import perf_counter

from celery.result import AsyncResult

from bench.frontends import MAX_WAITS, TASK, AsyncFrontEnd, CeleryFrontEnd, Outcome
from bench.stats import Tally


class Numbers:
    """Hands out a fresh argument for every task of the run, so no answer can be mistaken."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def take(self, count: int) -> list[int]:
        """`count` arguments never handed out before."""
        return list(itertools.islice(self._next, count))


async def _timed(front: AsyncFrontEnd, x: int, tally: Tally) -> None:
    start = perf_counter()
    try:
        outcome = await front.call(x)
    except Exception as exc:  # a failed call is a result of the benchmark
        tally.fail(exc)
        return
    tally.record(2 * x, outcome.value, perf_counter() - start, outcome.submit_seconds)


async def run_sequential(front: AsyncFrontEnd, xs: list[int], seconds: float) -> Tally:
    """One call at a time: each waits for its result before the next submits."""
    tally = Tally()
    deadline = perf_counter() + seconds
    started = perf_counter()
    for x in xs:
        if perf_counter() > deadline:
            tally.skipped += 1
            continue
        await _timed(front, x, tally)
    tally.elapsed = perf_counter() - started
    return tally


async def run_concurrent(
    front: AsyncFrontEnd, xs: list[int], callers: int, seconds: float
) -> Tally:
    """`callers` coroutines, each running calls back to back until `xs` is used up."""
    return await _spread(lambda x, tally: _timed(front, x, tally), xs, callers, seconds)


Check = Callable[[int], Awaitable[str | None]]
"""A call that needs no task to run: None when its answer is right, else what was wrong."""


async def run_checked(check: Check, xs: list[int], callers: int, seconds: float) -> Tally:
    """`run_concurrent` for a call that checks its own answer (Submit alone, GetStatus)."""

    async def timed(x: int, tally: Tally) -> None:
        start = perf_counter()
        try:
            wrong = await check(x)
        except Exception as exc:  # a failed call is a result of the benchmark
            tally.fail(exc)
            return
        if wrong is None:
            tally.record_right(perf_counter() - start)
        else:
            tally.record_wrong(wrong)

    return await _spread(timed, xs, callers, seconds)


async def _spread(
    timed: Callable[[int, Tally], Awaitable[None]], xs: list[int], callers: int, seconds: float
) -> Tally:
    tally = Tally()
    deadline = perf_counter() + seconds
    shared: Iterator[int] = iter(xs)

    async def caller() -> None:
        for x in shared:  # one iterator for all callers: every x runs once
            if perf_counter() > deadline:
                tally.skipped += 1
                continue
            await timed(x, tally)

    started = perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    tally.elapsed = perf_counter() - started
    return tally


def one_at_a_time(xs: list[int], seconds: float, call: Callable[[Tally, int], None]) -> Tally:
    """`call(tally, x)` for each x in turn, until `seconds` have passed (the rest skipped)."""
    tally = Tally()
    deadline = perf_counter() + seconds
    started = perf_counter()
    for x in xs:
        if perf_counter() > deadline:
            tally.skipped += 1
        else:
            call(tally, x)
    tally.elapsed = perf_counter() - started
    return tally


def celery_sequential(front: CeleryFrontEnd, xs: list[int], seconds: float) -> Tally:
    """Raw Celery, one call at a time."""

    def call(tally: Tally, x: int) -> None:
        start = perf_counter()
        try:
            outcome: Outcome = front.call(x)
        except Exception as exc:  # a failed call is a result of the benchmark
            tally.fail(exc)
            return
        tally.record(2 * x, outcome.value, perf_counter() - start, outcome.submit_seconds)

    return one_at_a_time(xs, seconds, call)


def celery_windowed(front: CeleryFrontEnd, xs: list[int], window: int, seconds: float) -> Tally:
    """Raw Celery with `window` tasks in flight from one thread.

    `AsyncResult.get` is not safe to share between threads (celery/celery#3761),
    so the concurrent callers are a sliding window: send until `window` tasks
    are in flight, then collect the oldest. Results that arrive early are kept
    by Celery's result consumer, so collecting in order costs no extra wait.
    """
    tally = Tally()
    deadline = perf_counter() + seconds
    in_flight: deque[tuple[int, float, AsyncResult[object]]] = deque()
    started = perf_counter()
    for x in xs:
        while len(in_flight) >= window:
            _collect(front, in_flight.popleft(), tally)
        if perf_counter() > deadline:
            tally.skipped += 1
            continue
        start = perf_counter()
        try:
            in_flight.append((x, start, front.app.send_task(TASK, (x, x))))
        except Exception as exc:  # a failed call is a result of the benchmark
            tally.fail(exc)
    while in_flight:
        _collect(front, in_flight.popleft(), tally)
    tally.elapsed = perf_counter() - started
    return tally


def _collect(
    front: CeleryFrontEnd, sent: tuple[int, float, AsyncResult[object]], tally: Tally
) -> None:
    x, start, result = sent
    try:
        value = result.get(timeout=front.wait_seconds * MAX_WAITS)
    except Exception as exc:  # a failed call is a result of the benchmark
        tally.fail(exc)
        return
    tally.record(2 * x, value, perf_counter() - start, None)
