"""The Celery adapter: everything the gateway does with Celery's own API lives here."""

import asyncio
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from amqp.exceptions import AccessRefused
from amqp.exceptions import ConnectionError as AmqpConnectionError
from celery import Celery
from celery.backends.redis import RedisBackend, SentinelBackend
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskgate.server.daemon_thread import DaemonThread
from taskgate.server.errors import Unavailable
from taskgate.server.requests import Submission
from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import ConfigurationError, create_app

logger = logging.getLogger(__name__)

T = TypeVar("T")

_REDIS_SCHEMES = ("redis", "rediss")
_SENTINEL_SCHEME = "sentinel"
# A broker that refuses (RabbitMQ: wrong credentials, unknown vhost) is unavailable like
# one that is down; py-amqp raises these past kombu's own OperationalError.
_PUBLISH_ERRORS = (
    OperationalError,
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    AmqpConnectionError,
    AccessRefused,
)


class PublishOnlyRedisBackend(RedisBackend):
    """Celery's Redis result backend, minus the per-task subscription on publish.

    Celery's `send_task` subscribes its own result consumer to every task it sends;
    that consumer is not thread-safe (celery/celery#3761) and nobody in the gateway
    reads it. The gateway waits with its own shared subscription instead.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Do not subscribe: see the class docstring."""


class PublishOnlySentinelBackend(PublishOnlyRedisBackend, SentinelBackend):
    """The same, on the primary a Sentinel set names."""


def create_gateway_app(settings: CelerySettings) -> Celery:
    """The shared Celery app, configured for publishing only (no task code loaded)."""
    app = create_app(settings, load_tasks=False)
    scheme = str(app.conf.result_backend).partition("://")[0]
    if scheme == "rpc":
        raise ConfigurationError(
            "result backend 'rpc://' cannot serve a gateway: it sends each result back to "
            "the one client that sent the task, so no other gateway replica (and no gateway "
            "after a restart) could ever read it; use a redis:// result backend"
        )
    if scheme not in (*_REDIS_SCHEMES, _SENTINEL_SCHEME):
        raise ConfigurationError(
            f"result backend {scheme!r} is not supported: the gateway reads states "
            "and waits for results through Redis (redis://, rediss:// or sentinel://)"
        )
    backend = f"{__name__}:{PublishOnlyRedisBackend.__name__}"
    app.loader.override_backends = {
        **dict.fromkeys(_REDIS_SCHEMES, backend),
        _SENTINEL_SCHEME: f"{__name__}:{PublishOnlySentinelBackend.__name__}",
    }
    return app


@dataclass(frozen=True)
class PublishRetries:
    """How often and how far apart to try a publish, within the call's deadline.

    A try that failed slowly (a socket timeout) may fail as slowly again, so a
    retry starts only while its pause and another try as long as the last one
    still fit in the time left; a refused connection fails at once and is retried.
    """

    max_retries: int
    interval_start: float
    interval_step: float
    interval_max: float

    @classmethod
    def of(cls, policy: Mapping[str, Any]) -> "PublishRetries":
        """Read Celery's `retry_policy` form (max_retries and interval_* keys)."""
        return cls(
            max_retries=int(policy.get("max_retries", 3)),
            interval_start=float(policy.get("interval_start", 0)),
            interval_step=float(policy.get("interval_step", 0.2)),
            interval_max=float(policy.get("interval_max", 1)),
        )

    def pause_before(
        self, retry: int, time_left: float | None, last_try: float = 0.0
    ) -> float | None:
        """Seconds to wait before retry number `retry` (1, 2, ...); None: give up.

        `last_try` is how long the failed try took, `time_left` the call's budget now.
        """
        if retry > self.max_retries:
            return None
        pause = min(self.interval_start + (retry - 1) * self.interval_step, self.interval_max)
        if time_left is not None and pause + last_try > time_left:
            return None
        return pause


def left_since(time_left: float | None, started: float) -> float | None:
    """What is left of `time_left` (None: no deadline) at event-loop time `started`."""
    if time_left is None:
        return None
    return time_left - (asyncio.get_running_loop().time() - started)


async def retry_within(
    attempt: Callable[[], Awaitable[T]], retries: PublishRetries, time_left: float | None
) -> T:
    """Run `attempt`, retrying on Unavailable as `retries` allows within `time_left`."""
    loop = asyncio.get_running_loop()
    deadline = None if time_left is None else loop.time() + time_left
    for retry in itertools.count(1):
        started = loop.time()
        try:
            return await attempt()
        except Unavailable:
            left = None if deadline is None else deadline - loop.time()
            pause = retries.pause_before(retry, left, loop.time() - started)
            if pause is None:
                raise
            await asyncio.sleep(pause)
    raise AssertionError("unreachable: itertools.count never ends")


class Dispatcher:
    """Publishes submissions with `send_task`, off the event loop."""

    def __init__(self, app: Celery, threads: int) -> None:
        self._app = app
        self.default_retries = PublishRetries.of(app.conf.task_publish_retry_policy)
        """The configured publish retry policy (`task_publish_retry_policy`)."""
        # kombu's publish blocks; one thread per pooled broker connection.
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="taskgate-publish")
        # Asking the workers can take seconds while the broker is down: never ahead of a
        # publish, and never holding up the gateway's exit (server/daemon_thread.py).
        self._control = DaemonThread("taskgate-control")

    def result_key(self, task_id: str) -> bytes:
        """The Redis key (and pub/sub channel) where Celery stores this task's state."""
        key: bytes | str = cast(RedisBackend, self._app.backend).get_key_for_task(task_id)
        # Pub/sub reports channels as bytes; watches are keyed the same way.
        return key.encode() if isinstance(key, str) else key

    def has_queue(self, name: str) -> bool:
        """True when Celery may publish to `name`: configured, or created on demand."""
        conf = self._app.conf
        return bool(conf.task_create_missing_queues) or name in self._app.amqp.queues

    async def _run(self, call: Callable[[], T], what: str, executor: Executor | None = None) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor or self._executor, call)
        except _PUBLISH_ERRORS as exc:
            logger.warning("%s failed: %s", what, exc)
            raise Unavailable(f"the broker is unavailable: {exc}") from exc

    def retries_for(self, submission: Submission) -> PublishRetries:
        """The request's publish retry policy, or the configured one."""
        policy = submission.options.get("retry_policy")
        return PublishRetries.of(policy) if policy else self.default_retries

    async def publish(self, task_id: str, submission: Submission, time_left: float | None) -> None:
        """Send the task with `send_task`; raises Unavailable when the broker cannot take it.

        kombu's own retry is off: it would send again after a timeout that may have
        delivered the message, with no bound from the deadline. The retries here
        follow the request's policy (or the configured one) within `time_left`, and
        every try carries the same task id, so a copy that did land is skipped by the
        workers' guard (worker/guard.py) instead of running twice.
        """
        options = dict(submission.options)
        options.pop("retry_policy", None)
        send = functools.partial(
            self._app.send_task,
            submission.task,
            args=submission.args,
            kwargs=submission.kwargs,
            task_id=task_id,
            # One try each: kombu's retry would resend after an ambiguous timeout, and
            # retry=False makes kombu itself wait out broker_connection_timeout instead.
            retry=True,
            retry_policy={"max_retries": 0},
            **options,
        )
        await retry_within(
            lambda: self._run(send, f"publish of {task_id}"),
            self.retries_for(submission),
            time_left,
        )

    async def revoke(self, task_id: str, terminate: bool) -> None:
        """Broadcast Celery's revoke to the workers; with `terminate`, SIGTERM a running task."""
        revoke = functools.partial(
            self._app.control.revoke, task_id, terminate=terminate, signal="SIGTERM"
        )
        await self._run(revoke, f"revoke of {task_id}")

    async def registered(self, reply_seconds: float) -> dict[str, list[str]]:
        """Ask the live workers which tasks they serve: `{worker: ["name [info]", ...]}`."""
        inspect = self._app.control.inspect(timeout=reply_seconds)
        replies = await self._run(
            functools.partial(inspect.registered, "ignore_result"),
            "inspect registered",
            self._control,
        )
        return dict(replies or {})

    def close(self) -> None:
        """Wait for publishes in flight, then release the threads and broker connections."""
        self._control.shutdown(wait=False, cancel_futures=True)
        self._executor.shutdown(wait=True)
        self._app.close()
