"""What the gateway does with tasks already submitted, free of gRPC: read, wait, watch, cancel."""

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from celery import states

from server.dispatch import Dispatcher
from server.errors import NotFound, ResultIgnored
from server.records import DispatchRecord, DispatchRecords
from server.registry import WorkerRegistry
from server.results import PENDING, ResultStore, TaskSnapshot
from server.watcher import ResultWatcher
from taskgate.v1 import task_service_pb2 as pb


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
        return TaskView(task_id, snapshot or PENDING, record)

    def _refuse_ignored(self, task_id: str, task: str) -> None:
        view = self._registry.known()
        registered = view.tasks.get(task) if view else None
        if registered is not None and registered.ignore_result:
            raise ResultIgnored(task_id, task)

    async def result(self, task_id: str, wait: float) -> TaskView:
        """The task once it is ready, or after `wait` seconds, whichever is first."""
        return await self._until_ready(await self.status(task_id), wait)

    async def result_of_new(self, task_id: str, task: str, wait: float) -> TaskView:
        """`result` for a task this call has just dispatched (Execute).

        It exists and nothing could have expired, so there is nothing to look up
        first: the wait's own read, once subscribed, finds whatever is stored.
        """
        if wait <= 0:
            return await self.status(task_id)
        self._refuse_ignored(task_id, task)
        return await self._until_ready(TaskView(task_id, PENDING, None), wait)

    async def _until_ready(self, view: TaskView, wait: float) -> TaskView:
        if view.snapshot.ready or wait <= 0:
            return view
        task_id = view.task_id
        snapshot = view.snapshot
        async with aclosing(self._changes(task_id, snapshot, wait)) as changes:
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
        async with aclosing(self._changes(task_id, last, wait=None)) as changes:
            async for snapshot in changes:
                if (snapshot.state_name, snapshot.result) != (last.state_name, last.result):
                    last = snapshot
                    yield TaskView(task_id, snapshot, view.record)
                if snapshot.ready:
                    return

    async def _changes(
        self, task_id: str, known: TaskSnapshot, wait: float | None
    ) -> AsyncGenerator[TaskSnapshot, None]:
        """Snapshots as they are stored, until `wait` runs out (None: until cancelled)."""
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        async with self._watcher.watch(self._store.key_for(task_id)) as watch:
            try:
                # Subscribed now, so a state stored from here on cannot be missed.
                yield await self._read_by(task_id, deadline) or known
                while True:
                    async with asyncio.timeout_at(deadline):
                        payloads = await watch.changes()
                    for payload in payloads:
                        if payload is None:
                            yield await self._read_by(task_id, deadline) or known
                        else:
                            yield TaskSnapshot.decode(payload)
            except TimeoutError:
                return

    async def _read_by(self, task_id: str, deadline: float | None) -> TaskSnapshot | None:
        """Read the state, giving up (TimeoutError) at `deadline`: a slow backend must
        not keep a wait past its end."""
        async with asyncio.timeout_at(deadline):
            return await self._store.read(task_id)

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
