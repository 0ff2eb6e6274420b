"""`python -m bench --quick` on a real stack: every front end is measured, every answer is right.

The benchmark starts its own redis-server, worker, gateway and Flower; nothing
here asserts on speed, only that each front end produced numbers and that no
task came back with a wrong sum or not at all.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.settings import BenchSettings
from bench.stats import Tally
from scripts.stack import REPO_ROOT

pytest.importorskip("flower", reason="Flower comes with the bench extra: pip install -e '.[bench]'")

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


def test_quick_run_measures_every_front_end_and_every_answer_is_right(tmp_path: Path) -> None:
    report, numbers = tmp_path / "results.md", tmp_path / "results.json"
    code, output = run_bench(["--quick", "--output", str(report), "--json", str(numbers)], 90)
    assert code == 0, output[-3000:]
    quick = BenchSettings.quick()
    found = json.loads(numbers.read_text())["front_ends"]
    assert set(found) == FRONT_ENDS
    for name, phases in found.items():
        sequential = phases["sequential"]
        assert sequential["correct"] == quick.sequential_calls, (name, sequential)
        assert sequential["median_ms"] > 0
        assert set(phases["throughput"]) == {str(c) for c in quick.concurrencies}
        for tally in phases["throughput"].values():
            assert tally["correct"] == quick.throughput_tasks, (name, tally)
            assert tally["tasks_per_second"] > 0
        for tally in [sequential, *phases["throughput"].values()]:
            assert (tally["wrong"], tally["errors"], tally["skipped"]) == (0, 0, 0), (name, tally)
    assert found["taskgate Submit + GetResult"]["sequential"]["submit_median_ms"] > 0
    assert found["taskgate Execute"]["sequential"]["submit_median_ms"] is None
    assert "| taskgate Execute |" in report.read_text()


def test_only_right_answers_are_timed() -> None:
    tally = Tally()
    tally.record(4, 4, round_trip=0.002, submit=0.001)
    tally.record(4, 5, round_trip=0.001, submit=0.001)
    tally.record(1, True, round_trip=0.001, submit=None)  # true == 1 in Python, yet is no sum
    tally.fail(TimeoutError("no result"))
    assert (tally.correct, tally.wrong, tally.errors) == (1, 2, 1)
    assert (tally.round_trips, tally.submits) == ([0.002], [0.001])
    assert not tally.clean
