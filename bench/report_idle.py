"""The worker-free phases and the issue's targets in the report, and as JSON."""

from typing import Any

from bench.idle import IDLE_QUEUE
from bench.idle_suite import CEILING_SUBMIT, STATUS_CALLERS, TASKGATE_SUBMIT, IdleResults
from bench.settings import BenchSettings
from bench.stats import Percentiles, Tally
from bench.suite import FrontEndResult
from bench.targets import SUBMIT_CALLERS, loop_tasks_per_second, ratio, targets
from bench.waits import DEADLINE_BEYOND_WAIT, MB, WaitsResult


def idle_setup_rows(settings: BenchSettings) -> dict[str, str]:
    """What the worker-free phases did, for the setup table."""
    in_flight = ", ".join(str(c) for c in settings.idle_concurrencies)
    return {
        "Submit alone": f"{settings.idle_tasks} submissions of `tasks.add` per front end at "
        f"{in_flight} in flight, to the queue `{IDLE_QUEUE}`, which no worker consumes "
        "(emptied after every turn); only answers carrying a task id are timed",
        "clients, no worker": "taskgate and the ceiling: grpc.aio, one channel each, the same "
        "code; send_task loop: `app.send_task` in a plain loop on one thread (one in flight "
        "whatever the column); Flower: `POST /api/task/send-task/tasks.add`, asyncio HTTP/1.1",
        "ceiling": "the empty-handler ceiling: a grpc.aio TaskService in its own process "
        "(uvloop, as the gateway) whose Submit and GetStatus return a constant at once",
        "SubmitBatch": f"{settings.batch_tasks} items per batch size, one batch in flight",
        "GetStatus": f"{settings.status_calls} calls at {STATUS_CALLERS} in flight of one "
        "finished task, every reply checked SUCCESS",
        "waits": f"{settings.concurrent_waits} GetResult calls at once over 8 channels, each "
        f"waiting {settings.concurrent_wait_seconds} s on an idle task; gateway memory "
        "(RSS) and threads read from /proc every 0.1 s",
    }


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _cells(tally: Tally) -> list[str]:
    found = Percentiles.of(tally.round_trips)
    median, p99 = (found.median_ms, found.p99_ms) if found else (None, None)
    return [_number(tally.tasks_per_second), _number(median, 2), _number(p99, 2)]


def _submit_table(idle: IdleResults, settings: BenchSettings, chart: str | None) -> list[str]:
    head = ["front end"]
    for c in settings.idle_concurrencies:
        head += [f"{c} in flight: tasks/s", "median ms", "p99 ms"]
    lines = [
        "## Submit alone, into a queue no worker consumes (higher tasks/s is better)",
        "",
        _row(head),
        _row(["---"] + ["---:"] * (len(head) - 1)),
    ]
    for name, by_callers in idle.submit.items():
        cells = [name]
        for c in settings.idle_concurrencies:
            cells += _cells(by_callers[c])
        lines.append(_row(cells))
    cpu = [
        idle.submit[TASKGATE_SUBMIT][c].cpu_ms_per_task().get("gateway")
        for c in settings.idle_concurrencies
    ]
    lines += ["", "Gateway CPU per 1,000 Submits (ms, from /proc): " + ", ".join(
        f"{_number(None if ms is None else ms * 1000)} at {c} in flight"
        for ms, c in zip(cpu, settings.idle_concurrencies, strict=True)
    ) + "."]  # fmt: skip
    if chart:
        lines += ["", f"![Submit alone: tasks/s and latency by calls in flight]({chart})"]
    return [*lines, ""]


def _batch_table(idle: IdleResults) -> list[str]:
    loop = loop_tasks_per_second(idle)
    lines = [
        "## SubmitBatch, one call in flight (items per second; median and p99 of a whole call)",
        "",
        _row(["batch size", "tasks/s", "median ms", "p99 ms", "÷ send_task loop"]),
        _row(["---", "---:", "---:", "---:", "---:"]),
    ]
    for size, tally in idle.batch.items():
        share = tally.tasks_per_second / loop if tally.tasks_per_second and loop else None
        lines.append(_row([str(size), *_cells(tally), _number(share, 2)]))
    lines += ["", f"The send_task loop, over all its turns: {_number(loop)} tasks/s."]
    return [*lines, ""]


def _status_table(idle: IdleResults) -> list[str]:
    lines = [
        f"## GetStatus at {STATUS_CALLERS} in flight, against the empty-handler ceiling",
        "",
        _row(["server", "calls/s", "median ms", "p99 ms"]),
        _row(["---", "---:", "---:", "---:"]),
    ]
    lines += [_row([name, *_cells(tally)]) for name, tally in idle.status.items()]
    return [*lines, ""]


def _waits_table(waits: WaitsResult) -> list[str]:
    return [
        f"## {waits.waits:,} concurrent waits (GetResult, {waits.wait_seconds} s each)",
        "",
        _row(["", "before", "peak while waiting", "growth"]),
        _row(["---", "---:", "---:", "---:"]),
        _row(["gateway RSS (MB)", _number(waits.rss_before / MB, 1),
              _number(waits.rss_peak / MB, 1), _number(waits.rss_growth_mb, 1)]),
        _row(["gateway threads", str(waits.threads_before), str(waits.threads_peak),
              str(waits.threads_peak - waits.threads_before)]),
        "",
        f"{waits.right} of {waits.waits} waits answered not ready (PENDING) before their "
        f"deadline ({waits.wait_seconds + DEADLINE_BEYOND_WAIT:g} s), {waits.wrong} wrong, "
        f"{waits.errors} failed; they answered {waits.fastest_seconds:.2f} to "
        f"{waits.slowest_seconds:.2f} s after the client started them (one Python process "
        "starts and reads them all: its own queueing counts in). "
        f"{'; '.join(waits.error_samples)}",
        "",
    ]  # fmt: skip


def _targets_table(results: list[FrontEndResult], idle: IdleResults) -> list[str]:
    lines = [
        "## Targets (the issue's ratios, from this one run)",
        "",
        _row(["target", "bound", "measured", "met?", "missed by"]),
        _row(["---", "---:", "---:", "---", "---"]),
    ]
    for target in targets(results, idle):
        sign = "≥" if target.at_least else "≤"
        met = {True: "yes", False: "**no**", None: "n/a"}[target.met]
        measured = _number(target.measured, target.digits)
        cells = [target.what, f"{sign} {target.bound:g}", measured]
        lines.append(_row([*cells, met, target.gap()]))
    return [*lines, ""]


def render_idle(
    results: list[FrontEndResult], idle: IdleResults, settings: BenchSettings, chart: str | None
) -> str:
    """The worker-free sections and the targets, as Markdown."""
    lines = _targets_table(results, idle) + _submit_table(idle, settings, chart)
    lines += _batch_table(idle) + _status_table(idle)
    if idle.waits is not None:
        lines += _waits_table(idle.waits)
    bad = [
        f"- {name}: {t.wrong} wrong, {t.errors} failed, {t.skipped} skipped; e.g. "
        f"{'; '.join(t.error_samples)}"
        for name, t in idle.tallies()
        if not t.clean
    ]
    right = sum(t.correct for _, t in idle.tallies())
    lines += [f"Worker-free phases: {right} calls answered right (warm-ups not counted).", *bad]
    return "\n".join(lines)


def render_submit_only(idle: IdleResults, settings: BenchSettings) -> str:
    """The Submit and SubmitBatch sections, with the ratios the issue asks for."""
    ours = idle.submit[TASKGATE_SUBMIT][SUBMIT_CALLERS].tasks_per_second
    ceiling = idle.submit[CEILING_SUBMIT][SUBMIT_CALLERS].tasks_per_second
    loop = loop_tasks_per_second(idle)
    ratios = [
        f"Submit at {SUBMIT_CALLERS} ÷ ceiling: {_number(ratio(ours, ceiling), 2)}",
        f"Submit at {SUBMIT_CALLERS} ÷ send_task loop: {_number(ratio(ours, loop), 2)}",
    ]
    lines = _submit_table(idle, settings, None) + _batch_table(idle) + ratios
    return "\n".join(lines)


def _tally_json(tally: Tally) -> dict[str, Any]:
    found = Percentiles.of(tally.round_trips)
    return {
        "correct": tally.correct, "wrong": tally.wrong, "errors": tally.errors,
        "skipped": tally.skipped, "tasks_per_second": tally.tasks_per_second,
        "median_ms": found.median_ms if found else None, "p99_ms": found.p99_ms if found else None,
        "cpu_ms_per_task": tally.cpu_ms_per_task(), "error_samples": tally.error_samples,
    }  # fmt: skip


def idle_json(results: list[FrontEndResult], idle: IdleResults) -> dict[str, Any]:
    """The worker-free numbers and the targets, for machines."""
    waits = idle.waits
    return {
        "submit": {
            name: {str(c): _tally_json(t) for c, t in by.items()}
            for name, by in idle.submit.items()
        },
        "send_task_loop_tasks_per_second": loop_tasks_per_second(idle),
        "batch": {str(size): _tally_json(t) for size, t in idle.batch.items()},
        "status": {name: _tally_json(t) for name, t in idle.status.items()},
        "waits": None if waits is None else {
            "waits": waits.waits, "right": waits.right, "wrong": waits.wrong,
            "errors": waits.errors, "rss_growth_mb": waits.rss_growth_mb,
            "fastest_seconds": waits.fastest_seconds, "slowest_seconds": waits.slowest_seconds,
            "threads_before": waits.threads_before, "threads_peak": waits.threads_peak,
            "error_samples": waits.error_samples,
        },
        "targets": [{"what": t.what, "bound": t.bound, "measured": t.measured, "met": t.met}
                    for t in targets(results, idle)],
    }  # fmt: skip
