"""The workers' result backend: a task whose state cannot be stored goes back to the broker.

With `task_acks_late`, Celery acknowledges a message once its trace returns,
whatever happened inside it. When the result backend is down, storing
STARTED fails before the task body runs; the trace reports that as an
internal error, storing FAILURE fails too, and the message is acknowledged
anyway: a task the caller was told is queued never runs and stays PENDING.

`Reject(requeue=True)` is the one exception the trace lets through (Celery's
`build_tracer` re-raises it from the STARTED store and from the final
SUCCESS, FAILURE or RETRY store alike). In a prefork worker the pool child
sends it to the parent, whose `Request.on_failure` turns it into
`reject(requeue=True)`: kombu's Redis transport moves the message from its
unacked hash back onto the queue, flagged redelivered; RabbitMQ requeues it.
"""

import logging
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError, Reject

logger = logging.getLogger(__name__)

_REDIS_SCHEMES = ("redis", "rediss")


class RequeueingRedisBackend(RedisBackend):
    """Celery's Redis result backend, whose store gives the task back when Redis is out.

    `result_backend_always_retry` first rides out a blip; only a store that
    still fails on a connection error after those retries rejects the
    message. Any other store error (a value too large, say) is raised as
    before: a requeue could never cure it.
    """

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Store like Celery; raise `Reject(requeue=True)` when Redis cannot be reached."""
        try:
            return super().store_result(task_id, result, state, traceback, request, **kwargs)
        except Exception as exc:
            cause = _last_error(exc)
            if not self.exception_safe_to_retry(cause):
                raise
            logger.warning(
                "task %s: cannot store %s in the result backend (%s); "
                "giving the message back to the broker",
                task_id,
                state,
                cause,
            )
            # The reason is a string: Reject crosses from the pool child to its parent pickled.
            raise Reject(f"cannot store {state}: {cause}", requeue=True) from exc


class RequeueingSentinelBackend(RequeueingRedisBackend, SentinelBackend):
    """The same, on the primary a Sentinel set names."""


def _last_error(exc: Exception) -> Exception:
    """The error behind `exc`: Celery's retries give up with a BackendStoreError raised
    from the last one (with `result_backend_always_retry` off, the error comes as is)."""
    if isinstance(exc, BackendStoreError) and isinstance(exc.__cause__, Exception):
        return exc.__cause__
    return exc


def install_requeueing_backend(app: Celery) -> None:
    """Make `app` (a worker's, not the gateway's) give tasks back for Redis and Sentinel URLs.

    Call before anything touches `app.backend`.
    """
    backend = f"{__name__}:{RequeueingRedisBackend.__name__}"
    app.loader.override_backends = {
        **dict.fromkeys(_REDIS_SCHEMES, backend),
        "sentinel": f"{__name__}:{RequeueingSentinelBackend.__name__}",
    }
