"""Which tasks live workers serve: asked in the background, never once per call."""

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from taskgate.server import background
from taskgate.server.dispatch import Dispatcher
from taskgate.server.errors import GatewayError, Unavailable

logger = logging.getLogger(__name__)

# Until a worker first answers, ask again soon: gateway and workers often start
# together (compose), and an empty answer then is no answer. The pause doubles from
# this, up to _FIRST_PAUSE_MAX_SECONDS (never more than the refresh interval).
_FIRST_PAUSE_SECONDS = 0.5
_FIRST_PAUSE_MAX_SECONDS = 4.0

_ENTRY = re.compile(r"(?P<name>\S+)(?: \[(?P<info>.*)\])?")


@dataclass(frozen=True)
class RegisteredTask:
    """A task name, the workers serving it, and whether it stores results."""

    name: str
    workers: tuple[str, ...] = ()
    ignore_result: bool = False


@dataclass(frozen=True)
class WorkerView:
    """What the workers said the last time they were asked."""

    tasks: dict[str, RegisteredTask] = field(default_factory=dict)
    checked_at: float = 0.0
    workers: frozenset[str] = frozenset()
    """The workers that answered."""
    asked_at: float = 0.0
    """When the question went out: a worker heard of before then and absent is gone."""


def parse_registered(
    replies: dict[str, list[str]], checked_at: float, asked_at: float
) -> WorkerView:
    """Join `inspect().registered("ignore_result")` replies into one view by task name."""
    workers: dict[str, list[str]] = {}
    ignored: set[str] = set()
    for worker, entries in sorted(replies.items()):
        for entry in entries:
            match = _ENTRY.fullmatch(entry)
            if match is None:
                continue
            name = match["name"]
            workers.setdefault(name, []).append(worker)
            if "ignore_result=True" in (match["info"] or ""):
                ignored.add(name)
    tasks = {
        name: RegisteredTask(name, tuple(served_by), name in ignored)
        for name, served_by in workers.items()
    }
    return WorkerView(tasks, checked_at, frozenset(replies), asked_at)


class WorkerRegistry:
    """Keeps a fresh WorkerView, refreshed every `interval` seconds in the background."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        interval: float,
        reply_timeout: float = 1.0,
        on_first_view: Callable[[WorkerView], None] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._on_first_view = on_first_view
        """Called once, with the first view in which a worker answered."""
        self.interval = interval
        """Seconds between two questions to the workers."""
        self._reply_timeout = reply_timeout
        self._view: WorkerView | None = None
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first_heard: dict[str, float] = {}  # worker name: when this gateway heard of it
        self._pause = min(_FIRST_PAUSE_SECONDS, interval)

    def start(self) -> None:
        """Begin refreshing in the background."""
        self._task = asyncio.create_task(self._refresh_forever(), name="worker-registry")

    async def view(self, first_wait: float) -> WorkerView:
        """The latest view; waits up to `first_wait` seconds for the very first one."""
        if self._view is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(first_wait):
                    await self._first.wait()
        if self._view is None:
            raise Unavailable("the workers have not answered yet; try again shortly")
        return self._view

    def known(self) -> WorkerView | None:
        """The latest view without waiting, or None before the first answer."""
        return self._view

    def served(self) -> Collection[str] | None:
        """The task names live workers served at the last answer; None before the first."""
        return None if self._view is None else self._view.tasks.keys()

    def worker_gone(self, worker: str) -> bool:
        """True when `worker` is missing from a recent answer that other live workers gave,
        asked after this gateway first heard of `worker`; False when in doubt.

        A worker started since the last answer is not gone: it was heard of later.
        """
        now = time.time()
        heard = self._first_heard.setdefault(worker, now)
        view = self._view
        if view is None or not view.workers or worker in view.workers:
            return False
        recent = now - view.checked_at <= 2 * self.interval + self._reply_timeout
        return recent and heard < view.asked_at

    async def refresh(self) -> None:
        """Ask the workers now; until one has answered, an empty answer is no view."""
        asked_at = time.time()
        replies = await self._dispatcher.registered(self._reply_timeout)
        if not replies and self._view is None:
            if self._pause == _FIRST_PAUSE_SECONDS:  # once: a worker may never come
                logger.info("no worker has answered yet; asking again every few seconds")
            return
        for worker in replies:
            self._first_heard.setdefault(worker, asked_at)
        first = self._view is None
        self._view = parse_registered(replies, time.time(), asked_at)
        self._first.set()
        if first and self._on_first_view is not None:
            self._on_first_view(self._view)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except GatewayError as exc:
                logger.warning("could not ask the workers what they serve: %s", exc)
            except Exception:
                # A bug must not end the loop: ListTasks would be UNAVAILABLE for ever.
                logger.exception("asking the workers failed; asking again soon")
            await asyncio.sleep(self._next_pause())

    def _next_pause(self) -> float:
        """The refresh interval once a worker has answered; a doubling pause until then."""
        if self._view is not None:
            return self.interval
        pause = self._pause
        self._pause = min(pause * 2, _FIRST_PAUSE_MAX_SECONDS, self.interval)
        return pause

    async def close(self) -> None:
        """Stop refreshing."""
        await background.stop(self._task)
