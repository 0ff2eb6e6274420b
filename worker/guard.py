"""At most one run per task id, except a genuine redelivery.

A publish can be duplicated: an ambiguous timeout retried under the same task id,
an idempotency claim taken over after its gateway died, kombu's own retry.
Celery's `worker_deduplicate_successful_tasks` skips only messages flagged
redelivered whose task already succeeded, so a plain second copy runs again.

Before a task is handed to the pool, the worker's main process claims the pair
(task id, retry number) in the result backend's Redis with SET NX. The first
message to claim it runs. A later message for the same pair is a duplicate and
is acknowledged without running and without storing any state, unless it is a
redelivery (the broker gave back a message whose worker died, acks_late) of a
task that has not reached a final state: that one runs, so that nothing is lost.
A retry (`self.retry()`) carries the next retry number and so runs as usual.
"""

import logging
from typing import Any

from celery import Task, states
from celery.worker.request import Request
from celery.worker.state import task_ready

logger = logging.getLogger(__name__)

CLAIM_PREFIX = "taskgate:run:"
GUARDED_TASK = f"{__name__}:GuardedTask"
_DEFAULT_CLAIM_SECONDS = 86400


def claim_key(task_id: str, retries: int) -> str:
    """Where the claim of one run of a task id lives."""
    return f"{CLAIM_PREFIX}{task_id}:{retries}"


class GuardedRequest(Request):
    """A worker request that skips duplicate messages of a task id already claimed."""

    _guard_passed = False

    def revoked(self) -> bool:
        """Celery's revoked check, then the duplicate check; True skips the message.

        Celery calls this in the main process right before the task goes to the
        pool (and once on receipt for tasks with `expires`), and answers True
        by dropping the request: the hook where nothing has run or been stored.
        """
        if super().revoked():
            return True
        if self._guard_passed or self._admitted():
            self._guard_passed = True
            return False
        logger.info("skipping a duplicate message of task %s[%s]", self.name, self.id)
        task_ready(self)
        self.acknowledge()
        self._already_revoked = True  # asked again, the answer stays "skip"
        return True

    def _admitted(self) -> bool:
        backend: Any = self.task.backend
        client = getattr(backend, "client", None)
        if client is None:
            return True  # not a Redis result backend: nothing to claim in
        retries = int(self.request_dict.get("retries") or 0)
        try:
            if client.set(claim_key(self.id, retries), self.hostname, nx=True, ex=_ttl(self)):
                return True
            if not self.delivery_info.get("redelivered"):
                return False
            # A redelivery: run it again unless the first run reached a final state.
            return backend.get_state(self.id) not in states.READY_STATES
        except Exception as exc:  # a backend blip must not lose the task: run it
            logger.warning("could not check task %s for duplicates: %s", self.id, exc)
            return True


def _ttl(request: GuardedRequest) -> int:
    expires = request.task.app.conf.result_expires
    seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
    return int(seconds or _DEFAULT_CLAIM_SECONDS)


class GuardedTask(Task):  # type: ignore[type-arg]
    """The base class of taskgate's worker tasks: requests go through the guard."""

    Request = f"{__name__}:GuardedRequest"
