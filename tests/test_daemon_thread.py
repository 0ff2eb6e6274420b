"""The daemon thread that runs the gateway's calls which may hang on a broker that is down."""

import threading
from concurrent.futures import CancelledError

import pytest

from taskgate.server.daemon_thread import DaemonThread


def test_calls_run_in_turn_on_a_daemon_thread_and_errors_reach_the_caller() -> None:
    executor = DaemonThread("test-daemon")
    names = executor.submit(
        lambda: (threading.current_thread().name, threading.current_thread().daemon)
    )
    failing = executor.submit(lambda: 1 / 0)
    assert names.result(timeout=5) == ("test-daemon", True)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    executor.shutdown()


def test_after_shutdown_waiting_calls_are_cancelled_and_new_ones_refused() -> None:
    executor = DaemonThread("test-daemon")
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(5)

    running = executor.submit(hold)
    waiting = executor.submit(lambda: "never")
    assert started.wait(5)
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert running.result(timeout=5) is True
    with pytest.raises(CancelledError):
        waiting.result(timeout=5)
    with pytest.raises(RuntimeError):
        executor.submit(lambda: "refused")
