"""What the gateway does with tasks already submitted, free of gRPC: read, wait, watch, cancel."""

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from celery import states

from taskgate.server.dispatch import Dispatcher
from taskgate.server.errors import NotFound, ResultIgnored, Unavailable
from taskgate.server.outage import Outage
from taskgate.server.records import DispatchRecord, DispatchRecords
from taskgate.server.registry import WorkerRegistry
from taskgate.server.results import PENDING, ResultStore, TaskSnapshot
from taskgate.server.watcher import LOST, ResultWatcher, Watch
from taskgate.v1 import task_service_pb2 as pb

logger = logging.getLogger(__name__)

_TICK = b"\x00tick"  # not JSON, so never a published state: report the last one again


@dataclass(frozen=True)
class TaskView:
    """A task's stored state joined with the gateway's record of dispatching it."""

    task_id: str
    snapshot: TaskSnapshot
    record: DispatchRecord | None


class Gateway:
    """Reports on dispatched tasks and cancels them."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        records: DispatchRecords,
        store: ResultStore,
        watcher: ResultWatcher,
        registry: WorkerRegistry,
    ) -> None:
        self._dispatcher = dispatcher
        self._records = records
        self._store = store
        self._watcher = watcher
        self._registry = registry

    async def status(self, task_id: str, *, refuse_ignored: bool = True) -> TaskView:
        """The task's current state; NotFound for an id this gateway never dispatched.

        ResultIgnored for a task that stores no state, unless `refuse_ignored` is off.
        """
        snapshot, raw_record = await self._store.read_with(task_id, self._records.key(task_id))
        record = None if raw_record is None else DispatchRecord.decode(raw_record)
        if snapshot is None and record is None:
            raise NotFound(f"no task with id {task_id} (never submitted, or expired)")
        if snapshot is None:
            assert record is not None
            if self._records.result_expired(record, time.time()):
                raise NotFound(f"task {task_id} ({record.task}) finished and its result expired")
            if refuse_ignored:
                self._refuse_ignored(task_id, record.task)
        return TaskView(task_id, self._as_reported(snapshot or PENDING), record)

    def _as_reported(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        """The snapshot as reported: STARTED on a worker that is gone is PENDING.

        With acks_late, the message of a task whose worker died is given back to
        the queue, and another worker will start it again: it waits for a worker.
        """
        if snapshot.state_name != states.STARTED:
            return snapshot
        worker = snapshot.extended.get("worker")
        if not isinstance(worker, str) and isinstance(snapshot.result, dict):
            worker = snapshot.result.get("hostname")  # track_started's own meta
        if not isinstance(worker, str) or not self._registry.worker_gone(worker):
            return snapshot
        extended = {key: value for key, value in snapshot.extended.items() if key != "worker"}
        return TaskSnapshot(states.PENDING, extended=extended)

    def _refuse_ignored(self, task_id: str, task: str) -> None:
        view = self._registry.known()
        registered = view.tasks.get(task) if view else None
        if registered is not None and registered.ignore_result:
            raise ResultIgnored(task_id, task)

    async def result(self, task_id: str, until: float) -> TaskView:
        """The task once it is ready, or at `until` (event-loop time), whichever is first."""
        return await self._until_ready(await self.status(task_id), until)

    async def result_of_new(self, task_id: str, task: str, until: float) -> TaskView:
        """`result` for a task this call has just dispatched (Execute).

        It exists and nothing could have expired, so there is nothing to look up
        first: the wait's own read, once subscribed, finds whatever is stored.
        """
        if until <= asyncio.get_running_loop().time():
            return await self.status(task_id)
        self._refuse_ignored(task_id, task)
        return await self._until_ready(TaskView(task_id, PENDING, None), until)

    async def _until_ready(self, view: TaskView, until: float) -> TaskView:
        if view.snapshot.ready or until <= asyncio.get_running_loop().time():
            return view
        task_id = view.task_id
        snapshot = view.snapshot
        async with aclosing(self._changes(task_id, snapshot, until)) as changes:
            async for snapshot in changes:
                if snapshot.ready:
                    break
        return TaskView(task_id, snapshot, view.record)

    async def watch(self, task_id: str) -> AsyncGenerator[TaskView, None]:
        """The current state, then each change, until a final state."""
        view = await self.status(task_id)
        yield view
        if view.snapshot.ready:
            return
        last = view.snapshot
        # Ticks re-check, without a read, whether the worker of a STARTED task is gone.
        tick = self._registry.interval
        async with aclosing(self._changes(task_id, last, until=None, tick=tick)) as changes:
            async for snapshot in changes:
                if (snapshot.state_name, snapshot.result) != (last.state_name, last.result):
                    last = snapshot
                    yield TaskView(task_id, snapshot, view.record)
                if snapshot.ready:
                    return

    async def _changes(
        self, task_id: str, known: TaskSnapshot, until: float | None, tick: float | None = None
    ) -> AsyncGenerator[TaskSnapshot, None]:
        """Snapshots as reported, until `until` (event-loop time; None: until cancelled),
        and the last one again every `tick` seconds without a change.

        An outage of the result backend is ridden out (see `taskgate.server.outage`):
        Unavailable only if the state is still unknown when the wait runs out.
        """
        async with self._watcher.watch(self._store.key_for(task_id)) as watch:
            outage = Outage(self._watcher, until)
            payloads: list[bytes | None] = [None]  # subscribed: nothing stored from now is missed
            try:
                while True:
                    for payload in payloads:
                        if payload == LOST:
                            outage.begin()
                            continue
                        if payload is None:
                            read = await self._read_by(task_id, known, until, outage)
                            if read is None:
                                continue  # an outage: read again when the backend is back
                            known = read
                        elif payload != _TICK:
                            outage.end()
                            known = TaskSnapshot.decode(payload)
                        yield self._as_reported(known)
                    payloads = await self._next_changes(outage, watch, tick)
            except TimeoutError:
                outage.raise_if_unknown()

    async def _next_changes(
        self, outage: Outage, watch: Watch, tick: float | None
    ) -> list[bytes | None]:
        if tick is None:
            return await outage.changes(watch)
        try:
            async with asyncio.timeout(tick):
                return await outage.changes(watch)
        except TimeoutError:
            return [_TICK]

    async def _read_by(
        self, task_id: str, known: TaskSnapshot, until: float | None, outage: Outage
    ) -> TaskSnapshot | None:
        """Read the state (`known` when nothing is stored); None when the read failed,
        and an outage begins. TimeoutError at `until`: a slow backend must not keep a
        wait past its end."""
        try:
            async with asyncio.timeout_at(until):
                snapshot = await self._store.read(task_id)
        except Unavailable as exc:
            logger.info("task %s: could not read its state, will retry: %s", task_id, exc)
            outage.begin()
            return None
        outage.end()
        return snapshot or known

    async def cancel(
        self, task_id: str, terminate: bool
    ) -> tuple["pb.CancelOutcome.ValueType", TaskView]:
        """Revoke the task; returns the CancelOutcome and the state after it."""
        view = await self.status(task_id, refuse_ignored=False)
        if view.snapshot.ready:
            return pb.CANCEL_OUTCOME_ALREADY_FINISHED, view
        await self._dispatcher.revoke(task_id, terminate)
        task = view.record.task if view.record else str(view.snapshot.extended.get("name", ""))
        if view.snapshot.state_name in (states.PENDING, states.RETRY) and (
            await self._store.mark_revoked(task_id, task)
        ):
            return pb.CANCEL_OUTCOME_REVOKED, await self.status(task_id, refuse_ignored=False)
        view = await self.status(
            task_id, refuse_ignored=False
        )  # a worker may have moved it on meanwhile
        if view.snapshot.state_name == states.REVOKED:
            # A worker that had the message marked it first, answering our revoke.
            return pb.CANCEL_OUTCOME_REVOKED, view
        if view.snapshot.ready:
            return pb.CANCEL_OUTCOME_ALREADY_FINISHED, view
        if terminate:
            return pb.CANCEL_OUTCOME_TERMINATION_SIGNALLED, view
        return pb.CANCEL_OUTCOME_STILL_RUNNING, view
