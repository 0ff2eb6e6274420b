"""Readiness for the whole life of the gateway: the broker and the result backend, with hysteresis.

`""` is liveness: SERVING while the process serves and is not draining.
`taskgate.v1.TaskService` is readiness: SERVING while the broker and the result backend
answer. One failed check changes nothing (a Redis failover or restart blip must not
take every replica out of its load balancer); `failures` in a row turn it NOT_SERVING,
`successes` in a row turn it SERVING again. The first check at start decides at once.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2

from taskgate.server import background

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Check = Callable[[], Awaitable[list[str]]]
"""Asks the broker and the backend once; what is wrong, one line each (empty: ready)."""


@dataclass(frozen=True)
class ReadinessPolicy:
    """How often to ask, and how many answers in a row flip readiness."""

    interval_seconds: float = 2.0
    failures: int = 3
    successes: int = 2
    check_timeout_seconds: float = 2.0

    def worst_case_seconds(self) -> float:
        """The longest time from an outage to NOT_SERVING: every check hangs to its timeout."""
        return self.failures * (self.interval_seconds + self.check_timeout_seconds)


class Readiness:
    """Sets the gateway's two health statuses and keeps readiness current in the background."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        service: str,
        check: Check,
        policy: ReadinessPolicy,
    ) -> None:
        self._servicer = servicer
        self._service = service
        self._check = check
        self._policy = policy
        self._ready = False
        self._streak = 0  # answers in a row that disagree with the status in force
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Live at once; ready as the first check says; then ask every interval. True if ready."""
        await self._servicer.set("", SERVING)
        found = await self._ask()
        for problem in found:
            logger.error("degraded start: %s", problem)
        if found:
            logger.error(
                "degraded start: %s NOT_SERVING until the broker and the result backend "
                "answer (asking every %gs); calls meanwhile answer UNAVAILABLE",
                self._service,
                self._policy.interval_seconds,
            )
        await self._set(not found)
        self._task = asyncio.create_task(self._watch(), name="readiness")
        return not found

    async def _ask(self) -> list[str]:
        try:
            return await asyncio.wait_for(self._check(), self._policy.check_timeout_seconds)
        except TimeoutError:
            return [f"no answer within {self._policy.check_timeout_seconds:g}s"]

    async def _set(self, ready: bool) -> None:
        self._ready = ready
        self._streak = 0
        await self._servicer.set(self._service, SERVING if ready else NOT_SERVING)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._policy.interval_seconds)
            try:
                found = await self._ask()
            except Exception:
                logger.exception("checking the broker and the result backend failed")
                found = ["the check itself failed"]
            await self._record(found)

    async def _record(self, found: list[str]) -> None:
        answered = not found
        if answered == self._ready:
            if self._streak:
                logger.info(
                    "readiness: still %s after %d other answer(s)", self._status(), self._streak
                )
            self._streak = 0
            return
        self._streak += 1
        needed = self._policy.successes if answered else self._policy.failures
        if not answered:
            logger.warning(
                "readiness check failed (%d of %d): %s", self._streak, needed, "; ".join(found)
            )
        if self._streak >= needed:
            await self._set(answered)
            level = logging.INFO if answered else logging.ERROR
            logger.log(level, "readiness: %s is %s", self._service, self._status())

    def _status(self) -> str:
        return "SERVING" if self._ready else "NOT_SERVING"

    async def drain(self) -> None:
        """Stop asking; both statuses NOT_SERVING for good (the gateway is shutting down)."""
        await background.stop(self._task)
        await self._servicer.enter_graceful_shutdown()
