"""`python -m bench --quick` on a real stack: every phase is measured, every answer is right.

The benchmark starts its own redis-server, worker, gateway, Flower and empty-handler
ceiling; nothing here asserts on speed, only that each front end and each phase
produced numbers and that no call came back wrong or not at all.
"""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.settings import BenchSettings
from bench.stats import Tally
from scripts.stack import REPO_ROOT

pytest.importorskip("flower", reason="Flower comes with the bench extra: pip install -e '.[bench]'")

NO_WORKER_SUBMITTERS = {
    "taskgate Submit",
    "empty-handler ceiling Submit",
    "send_task loop",
    "Flower send-task",
}
FRONT_ENDS = {
    "raw Celery",
    "taskgate Submit + GetResult",
    "taskgate Execute",
    "Flower async-apply + result",
    "Flower apply",
}


def run_bench(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run `python -m bench`; past `timeout`, SIGTERM it so it stops what it started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *argv],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"python -m bench {' '.join(argv)} ran over {timeout}s:\n{output[-3000:]}")
    return process.returncode, output


@dataclass(frozen=True)
class QuickRun:
    """What one `python -m bench --quick` wrote."""

    report: str
    numbers: dict[str, Any]
    chart: Path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """One quick run for every test here: it starts a whole stack of its own."""
    directory = tmp_path_factory.mktemp("bench")
    report, numbers = directory / "results.md", directory / "results.json"
    code, output = run_bench(["--quick", "--output", str(report), "--json", str(numbers)], 120)
    assert code == 0, output[-3000:]
    return QuickRun(report.read_text(), json.loads(numbers.read_text()), report.with_suffix(".png"))


def assert_clean(name: str, tally: dict[str, Any], calls: int) -> None:
    """Every call of the phase answered right, and the phase has numbers."""
    assert tally["correct"] == calls, (name, tally)
    assert (tally["wrong"], tally["errors"], tally["skipped"]) == (0, 0, 0), (name, tally)
    assert tally["tasks_per_second"] > 0, (name, tally)


def test_quick_run_measures_every_front_end_and_every_answer_is_right(quick_run: QuickRun) -> None:
    quick = BenchSettings.quick()
    found = quick_run.numbers["front_ends"]
    assert set(found) == FRONT_ENDS
    for name, phases in found.items():
        sequential = phases["sequential"]
        assert sequential["correct"] == quick.sequential_calls, (name, sequential)
        assert sequential["median_ms"] > 0
        assert set(phases["throughput"]) == {str(c) for c in quick.concurrencies}
        for tally in phases["throughput"].values():
            assert_clean(name, tally, quick.throughput_tasks)
        assert (sequential["wrong"], sequential["errors"], sequential["skipped"]) == (0, 0, 0)
    assert found["taskgate Submit + GetResult"]["sequential"]["submit_median_ms"] > 0
    assert found["taskgate Execute"]["sequential"]["submit_median_ms"] is None
    assert "| taskgate Execute |" in quick_run.report


def test_each_phase_without_a_worker_has_numbers_and_only_right_answers(
    quick_run: QuickRun,
) -> None:
    quick = BenchSettings.quick()
    found = quick_run.numbers["no_worker"]
    assert set(found["submit"]) == NO_WORKER_SUBMITTERS
    for name, by_callers in found["submit"].items():
        assert set(by_callers) == {str(c) for c in quick.idle_concurrencies}, name
        for tally in by_callers.values():
            assert_clean(name, tally, quick.idle_tasks)
            assert tally["p99_ms"] >= tally["median_ms"] > 0, (name, tally)
    gateway_cpu = found["submit"]["taskgate Submit"]["64"]["cpu_ms_per_task"]["gateway"]
    assert gateway_cpu > 0
    assert set(found["batch"]) == {str(size) for size in quick.batch_sizes}
    for size, tally in found["batch"].items():
        assert_clean(f"SubmitBatch of {size}", tally, quick.batch_tasks)
    assert set(found["status"]) == {"taskgate GetStatus", "empty-handler ceiling GetStatus"}
    for name, tally in found["status"].items():
        assert_clean(name, tally, quick.status_calls)
    waits = found["waits"]
    assert (waits["right"], waits["wrong"], waits["errors"]) == (quick.concurrent_waits, 0, 0)
    assert waits["threads_peak"] >= waits["threads_before"] > 0
    # The waits waited: a crowd of ends is packed a little earlier, never to nothing.
    assert waits["fastest_seconds"] >= quick.concurrent_wait_seconds / 2, waits
    assert waits["rss_growth_mb"] >= 0


def test_the_report_has_every_target_and_the_chart(quick_run: QuickRun) -> None:
    targets = quick_run.numbers["no_worker"]["targets"]
    assert len(targets) == 12
    assert all(target["measured"] is not None for target in targets), targets
    assert "## Targets" in quick_run.report
    assert "](results.png)" in quick_run.report
    assert quick_run.chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_only_right_answers_are_timed() -> None:
    tally = Tally()
    tally.record(4, 4, round_trip=0.002, submit=0.001)
    tally.record(4, 5, round_trip=0.001, submit=0.001)
    tally.record(1, True, round_trip=0.001, submit=None)  # true == 1 in Python, yet is no sum
    tally.fail(TimeoutError("no result"))
    assert (tally.correct, tally.wrong, tally.errors) == (1, 2, 1)
    assert (tally.round_trips, tally.submits) == ([0.002], [0.001])
    assert not tally.clean
