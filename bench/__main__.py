"""`python -m bench [--quick]`: run the benchmark, print the report, write bench/results.md.

`python -m bench --submit-only` measures only Submit at 64 in flight (taskgate, the
ceiling, the send_task loop) and SubmitBatch, and prints them: a quick look at the
publish path, which never writes bench/results.md."""

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from bench.chart import write_chart
from bench.cpu import process_tree
from bench.idle_suite import IdleResults, run_idle_suite
from bench.report import as_json, render, setup_rows
from bench.report_idle import idle_json, idle_setup_rows, render_idle, render_submit_only
from bench.services import BenchStack
from bench.settings import BenchSettings
from bench.suite import FrontEndResult, run_suite

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"

logger = logging.getLogger("bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke-test run")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown report (overwritten)"
    )
    parser.add_argument(
        "--submit-only", action="store_true", help="only Submit and SubmitBatch; printed"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--worker-concurrency", type=int, help="prefork processes (default 2)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run everything; 0 when every call returned the right answer, 1 otherwise."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s")
    args = parse_args(argv)
    # SIGTERM (and SIGINT, even when a shell started us in the background) unwinds
    # through the `finally` blocks, so every process the run started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    settings = BenchSettings.quick() if args.quick else BenchSettings()
    if args.submit_only:
        settings = BenchSettings.submit_only()
    settings = settings.with_worker_concurrency(args.worker_concurrency)
    log_dir = Path(tempfile.mkdtemp(prefix="taskgate-bench-"))
    load_before = os.getloadavg()[0]
    logger.info("starting redis-server, a worker, the gateway and Flower (logs in %s)", log_dir)
    try:
        with BenchStack(settings, log_dir) as stack:
            if args.submit_only:
                idle = asyncio.run(run_idle_suite(stack, settings, submit_only=True))
                print(render_submit_only(idle, settings))
                return 0 if all(tally.clean for _, tally in idle.tallies()) else 1
            logger.info("stack ready; running the phases with a worker")
            results = asyncio.run(run_suite(stack, settings))
            logger.info("running the phases without a worker")
            idle = asyncio.run(run_idle_suite(stack, settings))
            gateway_processes = len(process_tree(stack.gateway.popen.pid))
    except BaseException:
        logger.error("the run failed; the processes' logs are in %s", log_dir)
        raise
    if not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    setup = setup_rows(settings, args.quick, (load_before, os.getloadavg()[0]))
    setup["gateway"] = (
        f"`python -m taskgate.server`, default settings, {gateway_processes} process(es)"
    )
    setup.update(idle_setup_rows(settings))
    chart = args.output.with_suffix(".png")
    write_chart(idle.submit, chart)
    report = (
        render(results, settings, setup) + "\n" + render_idle(results, idle, settings, chart.name)
    )
    print(report)
    args.output.write_text(report + "\n")
    if args.json:
        numbers = {**as_json(results, setup), "no_worker": idle_json(results, idle)}
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0 if _clean(results, idle) else 1


def _clean(results: list[FrontEndResult], idle: IdleResults) -> bool:
    """True when every call of the run returned the right answer."""
    with_worker = all(
        r.sequential.clean and all(t.clean for t in r.throughput.values()) for r in results
    )
    return with_worker and idle.clean


if __name__ == "__main__":
    sys.exit(main())
