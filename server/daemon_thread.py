"""One daemon thread that runs blocking calls in turn, for calls that may hang on a broker
that is down and must not hold up the gateway's exit.

A ThreadPoolExecutor's threads are joined when the interpreter exits, so a `celery
inspect` stuck in kombu's connection retries kept a stopping gateway alive for 5 to 11 s
after its calls had drained. What this thread was doing when the process exits is
dropped: asking the workers again is the next gateway's business.
"""

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Call = tuple["Future[Any]", Callable[[], Any]]


class DaemonThread(Executor):
    """An executor of one daemon thread named `name`."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._shut = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> "Future[T]":
        """Run `fn(*args, **kwargs)` after the calls before it."""
        if self._shut:  # as ThreadPoolExecutor: a call queued behind the end never runs
            raise RuntimeError("cannot schedule new calls after shutdown")
        future: Future[T] = Future()
        self._calls.put((future, lambda: fn(*args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with `cancel_futures` the waiting ones are cancelled."""
        self._shut = True
        if cancel_futures:
            while True:
                try:
                    waiting = self._calls.get_nowait()
                except queue.Empty:
                    break
                if waiting is not None:
                    waiting[0].cancel()
        self._calls.put(None)
        if wait:
            self._thread.join()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, run = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(run())
            except BaseException as exc:  # the caller's to see, as with any executor
                future.set_exception(exc)
