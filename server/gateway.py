"""What the gateway does, free of gRPC: submit, read a state, wait for a result."""

import asyncio
import time
import uuid
from datetime import UTC, datetime

from server.catalog import Catalog
from server.dispatch import Dispatcher
from server.errors import NotFound
from server.records import DispatchRecord, DispatchRecords
from server.requests import Submission
from server.results import PENDING, ResultReader, TaskSnapshot
from server.watcher import ResultWatcher


def _start_delay(submission: Submission) -> float:
    """Seconds until the task may start, from `countdown` or `eta`."""
    if "countdown" in submission.options:
        return float(submission.options["countdown"])
    if "eta" in submission.options:
        eta: datetime = submission.options["eta"]
        return (eta - datetime.now(UTC)).total_seconds()
    return 0.0


class Gateway:
    """Dispatches tasks to Celery and reports on them."""

    def __init__(
        self,
        catalog: Catalog,
        dispatcher: Dispatcher,
        records: DispatchRecords,
        reader: ResultReader,
        watcher: ResultWatcher,
    ) -> None:
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._records = records
        self._reader = reader
        self._watcher = watcher

    async def submit(self, submission: Submission) -> str:
        """Queue the task and return its new id; OK means the broker has it."""
        self._catalog.check(submission.task)
        task_id = str(uuid.uuid4())
        record = DispatchRecord(submission.task, time.time(), submission.idempotency_key)
        # The record goes first: a fast worker's result must never meet a NOT_FOUND.
        await self._records.put(task_id, record, delay=_start_delay(submission))
        await self._dispatcher.publish(task_id, submission)
        return task_id

    async def status(self, task_id: str) -> TaskSnapshot:
        """The task's current state; NotFound for an id this gateway never dispatched."""
        snapshot = await self._reader.read(task_id)
        if snapshot is not None:
            return snapshot
        if await self._records.get(task_id) is None:
            raise NotFound(f"no task with id {task_id} (never submitted, or expired)")
        return PENDING

    async def result(self, task_id: str, wait: float) -> TaskSnapshot:
        """The task's state once it is ready, or after `wait` seconds, whichever is first."""
        snapshot = await self.status(task_id)
        if snapshot.ready or wait <= 0:
            return snapshot
        deadline = asyncio.get_running_loop().time() + wait
        async with self._watcher.watch(self._reader.key_for(task_id)) as watch:
            # Subscribed now, so a state stored from here on cannot be missed.
            snapshot = await self._reader.read(task_id) or snapshot
            while not snapshot.ready:
                try:
                    async with asyncio.timeout_at(deadline):
                        payload = await watch.next_change()
                except TimeoutError:
                    break
                if payload is None:
                    snapshot = await self._reader.read(task_id) or snapshot
                else:
                    snapshot = TaskSnapshot.decode(payload)
        return snapshot
