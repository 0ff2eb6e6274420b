"""Gives back a message a worker popped off its queue but never received.

kombu's Redis transport takes a message with BRPOP and records it in `unacked` only once
the worker has the reply; a reply lost on the wire (the worker's host cut off, the worker
killed at that moment) leaves the message nowhere, and no sweep of kombu's gives it back.

Every few seconds the reclaimer looks at each in-flight copy the publish script keeps
(server/publish/inflight.py) once it is past a grace. A task whose run claim
(worker/guard.py) or state exists has started: its copy goes. A message still in its
list (a backlog, or as kombu gives it back) or held in `unacked` (prefetched, waiting for
its countdown) is left, and looked at again a grace later. Anything else looks lost;
lost at two sweeps in a row (the pop-to-record window is milliseconds), it is pushed
onto the end of its list that BRPOP takes next, under a short lock so that one gateway
of many does it. It relies on taskgate's workers' run claims (see ReclaimSettings).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from taskgate.server import background
from taskgate.server.config import ReclaimSettings
from taskgate.server.observability import metrics
from taskgate.server.publish.inflight import InFlight, InflightKeys
from taskgate.worker.guard import claim_key

logger = logging.getLogger(__name__)

# A task that ran and left no trace (a stock worker's `ignore_result` task, one revoked or
# expired without a stored state) would look lost for ever: give up after a few times.
MAX_RECLAIMS = 3
# Copies read a round trip; most belong to tasks that ran, settled by one EXISTS each.
PAGE = 500
MAX_PAGES = 100


@dataclass(frozen=True)
class _Page:
    """What one page of a sweep did: copies looked for in the broker's lists, task ids
    that looked lost for the first time, copies left in front (those, and any another
    gateway is queueing again: the next page starts after them), copies queued again."""

    looked: int
    suspects: set[str]
    kept: int
    reclaimed: int


class Reclaimer:
    """Sweeps the in-flight copies in the background; see the module docstring."""

    def __init__(
        self,
        broker: Redis,
        backend: Redis,
        keys: InflightKeys,
        result_key: Callable[[str], bytes],
        settings: ReclaimSettings,
    ) -> None:
        self._broker = broker
        self._backend = backend
        self.keys = keys
        """Where the copies are; the publish script writes them (server/publish/broker.py)."""
        self._result_key = result_key
        self._settings = settings
        self._suspects: set[str] = set()
        """Task ids that looked lost at the last sweep."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep every `interval_seconds`, in the background."""
        self._task = asyncio.create_task(self._run(), name="reclaimer")

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._settings.interval_seconds)
            try:
                await self.sweep()
                failing = False
            except Exception as exc:  # Redis away: readiness says so; the next sweep looks again
                (logger.debug if failing else logger.warning)(
                    "could not look for lost messages: %s", exc
                )
                failing = True

    async def sweep(self) -> int:
        """Look once at each copy past the grace, those of tasks not started yet in the
        broker's lists for `batch` of them at most; how many were queued again.

        A sweep costs what its budget allows, not what the backlog holds: a copy looked at
        moves to the back, and the sweep stops once its budget is spent."""
        now = time.time()
        budget = self._settings.batch
        suspects: set[str] = set()
        kept = reclaimed = 0
        for _ in range(MAX_PAGES):
            ids = await self._broker.zrangebyscore(
                self.keys.index, "-inf", now - self._settings.grace_seconds, kept, PAGE
            )
            page = await self._page([cast(bytes, raw).decode() for raw in ids], budget, now)
            budget -= page.looked
            suspects |= page.suspects
            kept += page.kept
            reclaimed += page.reclaimed
            if len(ids) < PAGE or budget <= 0:
                break
        self._suspects = suspects
        return reclaimed

    async def _page(self, task_ids: list[str], budget: int, now: float) -> _Page:
        """Settle one page of copies: drop those of started tasks, and of `budget` others
        at most move those still waiting to the back and queue again those lost at the
        last sweep too. Only those others' copies are read."""
        started = await self._started(task_ids)
        gone = [task_id for task_id, done in zip(task_ids, started, strict=True) if done]
        unstarted = [task_id for task_id, done in zip(task_ids, started, strict=True) if not done]
        looked = unstarted[:budget]
        entries, expired = await self._copies(looked)
        checked, again, suspects = [], [], set()
        for entry, is_waiting in zip(entries, await self._waiting(entries), strict=True):
            if is_waiting:
                checked.append(entry.task_id)
            elif entry.task_id in self._suspects:
                again.append(entry)
            else:
                suspects.add(entry.task_id)
        pushed = [entry.task_id for entry in again if await self._reclaim(entry)]
        await self._settle(gone + expired, checked + pushed, now)
        kept = len(suspects) + len(again) - len(pushed)
        return _Page(len(looked), suspects, kept, len(pushed))

    async def _copies(self, task_ids: list[str]) -> tuple[list[InFlight], list[str]]:
        """The copies of `task_ids`, and the ids whose copy expired."""
        async with self._broker.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(self.keys.copy(task_id), "queue", "message", "reclaims")
            found = await pipe.execute()
        entries, gone = [], []
        for task_id, (queue, message, reclaims) in zip(task_ids, found, strict=True):
            if queue is None or message is None:
                gone.append(task_id)
            elif int(reclaims or 0) >= MAX_RECLAIMS:
                logger.error("task %s was queued again %d times: given up", task_id, MAX_RECLAIMS)
                gone.append(task_id)
            else:
                entries.append(InFlight(task_id, queue.decode(), message.decode()))
        return entries, gone

    async def _waiting(self, entries: list[InFlight]) -> list[bool]:
        """For each entry: still in its list (as published, or as kombu restores it), or
        held in `unacked`? One atomic look, from the tail of the list where old ones are.
        A task that started meanwhile looks lost once, and is found started next sweep.
        A key of another type (a queue named `unacked`) answers "waiting"."""
        if not entries:
            return []
        async with self._broker.pipeline(transaction=True) as pipe:
            for entry in entries:
                pipe.lpos(entry.queue, entry.message, rank=-1)
                pipe.lpos(entry.queue, entry.restored, rank=-1)
                pipe.hexists(self.keys.unacked, entry.delivery_tag)
            answers = await pipe.execute(raise_on_error=False)
        looks = zip(answers[::3], answers[1::3], answers[2::3], strict=True)
        return [
            first is not None or again is not None or bool(held) for first, again, held in looks
        ]

    async def _started(self, task_ids: list[str]) -> list[bool]:
        """For each task id: has a worker claimed its first run, or stored a state?"""
        async with self._backend.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.exists(claim_key(task_id, 0), self._result_key(task_id))
            counts = await pipe.execute()
        return [bool(count) for count in counts]

    async def _reclaim(self, entry: InFlight) -> bool:
        """Push `entry` back onto its list unless another gateway does; True if this one did."""
        lock = self.keys.lock(entry.task_id)
        if not await self._broker.set(lock, "1", nx=True, ex=self._settings.lock_seconds):
            return False
        async with self._broker.pipeline(transaction=True) as pipe:
            pipe.rpush(entry.queue, entry.message)
            pipe.hincrby(self.keys.copy(entry.task_id), "reclaims", 1)
            await pipe.execute()
        metrics.MESSAGES_RECLAIMED.inc()
        logger.warning(
            "task %s was taken off %s by a worker that never received it: queued it again",
            entry.task_id,
            entry.queue,
        )
        return True

    async def _settle(self, gone: list[str], checked: list[str], now: float) -> None:
        """Drop the copies of tasks that started; move the others checked to the back,
        so that a backlog of old messages does not hide the newer ones from the sweeps."""
        if not gone and not checked:
            return
        async with self._broker.pipeline(transaction=False) as pipe:
            if gone:
                pipe.zrem(self.keys.index, *gone)
                pipe.delete(*(self.keys.copy(task_id) for task_id in gone))
            if checked:
                pipe.zadd(self.keys.index, dict.fromkeys(checked, now), xx=True)
            await pipe.execute()

    async def close(self) -> None:
        """Stop sweeping and close the broker client (the backend's is the gateway's)."""
        await background.stop(self._task)
        await self._broker.aclose()
