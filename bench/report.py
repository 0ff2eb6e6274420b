"""The run as a Markdown report (printed and written to a file) and as JSON (for tests)."""

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from bench.services import redis_server_version
from bench.settings import BenchSettings
from bench.stats import Percentiles, Tally
from bench.suite import FrontEndResult

BASELINE = "raw Celery"
_PACKAGES = ("celery", "kombu", "redis", "grpcio", "protobuf", "flower", "tornado", "uvloop")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def setup_rows(settings: BenchSettings, quick: bool, load: tuple[float, float]) -> dict[str, str]:
    """What the numbers were measured on, one line per item."""
    versions = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    concurrencies = " and ".join(f"C={c}" for c in settings.concurrencies)
    return {
        "run": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {'quick' if quick else 'full'} mode",
        "machine": f"{os.cpu_count()} cores, shared; load average (1 min) "
        f"{load[0]:.2f} at start, {load[1]:.2f} at end",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": f"{versions}, redis-server {redis_server_version()}",
        "worker": f"one Celery worker, prefork, concurrency {settings.worker_concurrency}; "
        "task `tasks.add(x, x)`, every answer checked",
        "sequential": f"N={settings.sequential_calls} timed calls per front end, "
        f"after {settings.warmup_calls} warm-up calls",
        "throughput": f"{settings.throughput_tasks} tasks per front end at {concurrencies}",
        "order": f"every phase in {settings.rounds} round(s); in each, the front ends take "
        "turns in the order of the tables",
        "clients": "raw Celery: send_task + AsyncResult.get, one thread (a sliding window "
        "of C tasks for throughput); taskgate: grpc.aio, one channel, C coroutines "
        "(Submit then GetResult, or one Execute); "
        "Flower: asyncio HTTP/1.1 keep-alive, C coroutines",
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return "n/a" if not ours or not theirs else f"{ours / theirs:.2f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _percentile_table(
    results: list[FrontEndResult], samples: dict[str, list[float]], title: str
) -> list[str]:
    baseline = Percentiles.of(samples[BASELINE])
    lines = [
        title,
        "",
        _row(["front end", "median ms", "p90 ms", "p99 ms", "n", "÷ raw Celery (median)"]),
        _row(["---", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for result in results:
        found = Percentiles.of(samples[result.name])
        cells = [result.name]
        if found is None:
            cells += ["n/a"] * 3 + ["0", "n/a"]
        else:
            cells += [_ms(found.median_ms), _ms(found.p90_ms), _ms(found.p99_ms)]
            cells += [str(len(samples[result.name]))]
            cells += [_ratio(found.median_ms, baseline.median_ms if baseline else None)]
        lines.append(_row(cells))
    return [*lines, ""]


def _throughput_table(results: list[FrontEndResult], settings: BenchSettings) -> list[str]:
    head = ["front end"]
    for c in settings.concurrencies:
        head += [f"C={c} tasks/s", f"C={c} median ms", f"÷ raw Celery C={c}"]
    lines = [
        "## Throughput (higher is better; ratio < 1: slower than raw Celery)",
        "",
        _row(head),
        _row(["---"] + ["---:"] * (len(head) - 1)),
    ]
    baseline = next(r for r in results if r.name == BASELINE)
    for result in results:
        cells = [result.name]
        for c in settings.concurrencies:
            tally = result.throughput[c]
            median = Percentiles.of(tally.round_trips)
            cells += [
                f"{tally.tasks_per_second:.0f}" if tally.tasks_per_second else "n/a",
                _ms(median.median_ms if median else None),
                _ratio(tally.tasks_per_second, baseline.throughput[c].tasks_per_second),
            ]
        lines.append(_row(cells))
    return [*lines, ""]


_CPU_COLUMNS = ("client", "gateway", "Flower", "worker", "redis", "total")


def _cpu_table(results: list[FrontEndResult], settings: BenchSettings) -> list[str]:
    callers = max(settings.concurrencies)
    lines = [
        f"## CPU time per task at C={callers}, by process (ms; lower is better)",
        "",
        "`client` is the benchmark's own process, which runs every client (for raw Celery "
        "it does all the front-end work); processes a front end does not use stay near 0.",
        "",
        _row(["front end", *_CPU_COLUMNS]),
        _row(["---"] + ["---:"] * len(_CPU_COLUMNS)),
    ]
    for result in results:
        per_task = result.throughput[callers].cpu_ms_per_task()
        lines.append(_row([result.name] + [_ms(per_task.get(c)) for c in _CPU_COLUMNS]))
    return [*lines, ""]


def _tallies(results: list[FrontEndResult]) -> list[tuple[str, Tally]]:
    found = []
    for result in results:
        found.append((f"{result.name}, sequential", result.sequential))
        found += [(f"{result.name}, C={c}", t) for c, t in result.throughput.items()]
    return found


def _correctness(results: list[FrontEndResult]) -> list[str]:
    tallies = _tallies(results)
    total = {k: sum(getattr(t, k) for _, t in tallies) for k in ("wrong", "errors", "skipped")}
    correct = sum(t.correct for _, t in tallies)
    lines = [
        "## Correctness",
        "",
        f"Every answer was checked against x + x: {correct} right, {total['wrong']} wrong, "
        f"{total['errors']} failed calls, {total['skipped']} skipped at the phase time limit "
        "(warm-up calls not counted). Only right answers are timed.",
    ]
    for name, tally in tallies:
        if not tally.clean:
            lines.append(
                f"- {name}: {tally.wrong} wrong, {tally.errors} failed, {tally.skipped} "
                f"skipped; e.g. {'; '.join(tally.error_samples)}"
            )
    return [*lines, ""]


def render(results: list[FrontEndResult], settings: BenchSettings, setup: dict[str, str]) -> str:
    """The whole report as Markdown."""
    lines = ["# taskgate benchmark: taskgate vs raw Celery vs Flower's REST API", ""]
    lines += [_row(["setup", ""]), _row(["---", "---"])]
    lines += [_row([key, value]) for key, value in setup.items()] + [""]
    round_trips = {r.name: r.sequential.round_trips for r in results}
    submits = {r.name: r.sequential.submits for r in results}
    slower = "(lower is better; ratio > 1: slower than raw Celery)"
    lines += _percentile_table(results, round_trips, f"## Sequential round trip {slower}")
    lines += _percentile_table(results, submits, f"## Submit only, same calls {slower}")
    lines += _throughput_table(results, settings)
    lines += _cpu_table(results, settings)
    lines += _correctness(results)
    return "\n".join(lines)


def as_json(results: list[FrontEndResult], setup: dict[str, str]) -> dict[str, Any]:
    """The numbers and counts, for machines."""

    def tally(t: Tally) -> dict[str, Any]:
        found = Percentiles.of(t.round_trips)
        submit = Percentiles.of(t.submits)
        return {
            "correct": t.correct, "wrong": t.wrong, "errors": t.errors, "skipped": t.skipped,
            "median_ms": found.median_ms if found else None,
            "submit_median_ms": submit.median_ms if submit else None,
            "tasks_per_second": t.tasks_per_second, "error_samples": t.error_samples,
            "cpu_ms_per_task": t.cpu_ms_per_task(),
        }  # fmt: skip

    return {
        "setup": setup,
        "front_ends": {
            r.name: {
                "sequential": tally(r.sequential),
                "throughput": {str(c): tally(t) for c, t in r.throughput.items()},
            }
            for r in results
        },
    }
