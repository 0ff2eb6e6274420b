"""The issue's speed targets, each as a ratio measured in this run, met or not, and by how much."""

from dataclasses import dataclass

from bench.idle_suite import (
    CEILING_STATUS,
    CEILING_SUBMIT,
    FLOWER_SEND,
    SEND_TASK_LOOP,
    STATUS_CALLERS,
    TASKGATE_STATUS,
    TASKGATE_SUBMIT,
    IdleResults,
)
from bench.stats import Percentiles, Tally
from bench.suite import FrontEndResult

SUBMIT_CALLERS = 64
MAX_WAIT_GROWTH_MB = 150.0
MAX_ADDED_THREADS = 100  # far below one thread per wait


@dataclass(frozen=True)
class Target:
    """One target: what is compared, the bound, what this run measured."""

    what: str
    at_least: bool
    """True for a floor (≥ bound), False for a ceiling (≤ or < bound)."""
    bound: float
    measured: float | None
    digits: int = 2
    """Decimals worth showing: 0 for counts."""

    @property
    def met(self) -> bool | None:
        """None when the run did not measure it."""
        if self.measured is None:
            return None
        return self.measured >= self.bound if self.at_least else self.measured <= self.bound

    def gap(self) -> str:
        """How far a missed target is from its bound; empty when met or not measured."""
        if self.met is not False or self.measured is None:
            return ""
        if self.at_least:
            return f"{(1 - self.measured / self.bound) * 100:.1f}% short"
        return f"{(self.measured / self.bound - 1) * 100:.1f}% over"


def _floor(what: str, bound: float, measured: float | None) -> Target:
    return Target(what, True, bound, measured)


def _cap(what: str, bound: float, measured: float | None) -> Target:
    return Target(what, False, bound, measured)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours and theirs else None


def _median(tally: Tally) -> float | None:
    found = Percentiles.of(tally.round_trips)
    return found.median_ms if found else None


def _p99(tally: Tally) -> float | None:
    found = Percentiles.of(tally.round_trips)
    return found.p99_ms if found else None


def loop_tasks_per_second(idle: IdleResults) -> float | None:
    """The send_task loop over all its turns: it is one loop at every concurrency."""
    merged = Tally()
    for tally in idle.submit[SEND_TASK_LOOP].values():
        merged.merge(tally)
    return merged.tasks_per_second


def targets(results: list[FrontEndResult], idle: IdleResults) -> list[Target]:
    """Every target of the issue, in its order."""
    rate = {
        name: by.get(SUBMIT_CALLERS, Tally()).tasks_per_second for name, by in idle.submit.items()
    }
    submit, loop = rate[TASKGATE_SUBMIT], loop_tasks_per_second(idle)
    direct = {r.name: r.sequential for r in results}
    raw = direct["raw Celery"]
    found = [
        _floor("Submit at 64 in flight ÷ send_task loop (tasks/s)", 2, ratio(submit, loop)),
        _floor("Submit at 64 ÷ Flower send-task at 64", 5, ratio(submit, rate[FLOWER_SEND])),
        _floor(
            "Submit at 64 ÷ empty-handler ceiling at 64", 0.6, ratio(submit, rate[CEILING_SUBMIT])
        ),
    ]
    for size, tally in idle.batch.items():
        what = f"SubmitBatch of {size} ÷ send_task loop (tasks/s)"
        found.append(_floor(what, 20, ratio(tally.tasks_per_second, loop)))
    execute, submit_get = direct["taskgate Execute"], direct["taskgate Submit + GetResult"]
    status = {
        name: idle.status[name].tasks_per_second for name in (TASKGATE_STATUS, CEILING_STATUS)
    }
    found += [
        _cap(
            "Execute p50 ÷ raw Celery send_task + get() p50",
            1.3,
            ratio(_median(execute), _median(raw)),
        ),
        _cap("Execute p99 ÷ raw Celery p99", 1.5, ratio(_p99(execute), _p99(raw))),
        _cap(
            "Submit + GetResult p50 ÷ raw Celery p50",
            1.6,
            ratio(_median(submit_get), _median(raw)),
        ),
        _floor(
            f"GetStatus at {STATUS_CALLERS} ÷ empty-handler ceiling",
            0.6,
            ratio(status[TASKGATE_STATUS], status[CEILING_STATUS]),
        ),
    ]
    return found + _wait_targets(idle)


def _wait_targets(idle: IdleResults) -> list[Target]:
    waits = idle.waits
    if waits is None:
        return []
    count = f"{waits.waits:,} concurrent waits"
    added = waits.threads_peak - waits.threads_before
    answered = waits.right / waits.waits if waits.waits else None
    return [
        _cap(f"{count}: gateway memory growth (MB)", MAX_WAIT_GROWTH_MB, waits.rss_growth_mb),
        Target(
            f"{count}: gateway threads added (no thread per wait)",
            False,
            MAX_ADDED_THREADS,
            added,
            digits=0,
        ),
        _floor(f"{count}: share answered not ready before the deadline", 1.0, answered),
    ]
