"""Limits that keep one caller from piling work onto everyone: concurrency and rate."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2

from taskgate.server.errors import GatewayError


class ResourceExhausted(GatewayError):
    """Too many calls; the details say when to retry (RetryInfo) and which limit (QuotaFailure)."""

    code = code_pb2.RESOURCE_EXHAUSTED

    def __init__(self, message: str, subject: str, retry_after: float, kind: str) -> None:
        super().__init__(message)
        self.subject = subject
        self.retry_after = retry_after
        self.kind = kind  # which limit, for taskgate_limits_hit_total

    def details(self) -> list[Message]:
        delay = Duration()
        delay.FromNanoseconds(int(self.retry_after * 1e9))
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=self.subject, description=self.message
        )
        return [
            error_details_pb2.RetryInfo(retry_delay=delay),
            error_details_pb2.QuotaFailure(violations=[violation]),
        ]


class ConcurrencyLimit:
    """At most `limit` calls in progress on this gateway; the next is refused at once."""

    def __init__(self, limit: int, retry_after: float = 0.1) -> None:
        self.limit = limit
        self.in_progress = 0
        self._retry_after = retry_after

    def enter(self) -> None:
        """Count a call in, or raise ResourceExhausted when the gateway is full."""
        if self.in_progress >= self.limit:
            raise ResourceExhausted(
                f"the gateway is handling {self.limit} calls; retry shortly",
                "gateway:concurrent-calls",
                self._retry_after,
                "concurrency",
            )
        self.in_progress += 1

    def leave(self) -> None:
        """Count a call out."""
        self.in_progress -= 1


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimit:
    """A token bucket per caller: `rate` calls a second, bursts of up to `burst`.

    Per gateway replica: N replicas behind a balancer allow up to N times the rate.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, caller: str) -> None:
        """Spend one call of `caller`'s allowance, or raise ResourceExhausted."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(caller, _Bucket(self._burst, now))
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1:
            raise ResourceExhausted(
                f"{caller!r} is over its rate of {self._rate:g} calls per second",
                f"caller:{caller}",
                (1 - bucket.tokens) / self._rate,
                "rate",
            )
        bucket.tokens -= 1


class CallerConcurrencyLimit:
    """At most `limit` calls in progress for each caller, so that one cannot starve the rest."""

    def __init__(self, limit: int, retry_after: float = 0.1) -> None:
        self.limit = limit
        self._in_progress: dict[str, int] = {}
        self._retry_after = retry_after

    def enter(self, caller: str) -> None:
        """Count a call of `caller` in, or raise ResourceExhausted when it holds its limit."""
        held = self._in_progress.get(caller, 0)
        if held >= self.limit:
            raise ResourceExhausted(
                f"{caller!r} has {self.limit} calls in progress; retry when one ends",
                f"caller:{caller}:concurrent-calls",
                self._retry_after,
                "caller_concurrency",
            )
        self._in_progress[caller] = held + 1

    def leave(self, caller: str) -> None:
        """Count a call of `caller` out; a caller with none left is forgotten."""
        held = self._in_progress[caller] - 1
        if held:
            self._in_progress[caller] = held
        else:
            del self._in_progress[caller]


class ReadSlots:
    """At most `total` requests received at once, and a quarter of them for one caller:
    a caller's flood waits behind itself, and another caller's request is read next."""

    def __init__(self, total: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_caller = max(total // 4, 1)
        self._callers: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def reading(self, caller: str) -> AsyncIterator[None]:
        """Hold one of `caller`'s read slots and one of the gateway's while inside."""
        own, waiting = self._callers.setdefault(caller, (asyncio.Semaphore(self._per_caller), [0]))
        waiting[0] += 1
        try:
            async with own, self._total:
                yield
        finally:
            waiting[0] -= 1
            if not waiting[0]:
                del self._callers[caller]


class StreamNotRead(ResourceExhausted):
    """A stream's client did not take a message within the write timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the stream's messages were not read for {seconds:g}s; the stream is ended",
            "caller:stream-write-timeout",
            seconds,
            "stream_write",
        )


@dataclass
class CallLimits:
    """Every limit a TaskService call passes, counted before its request is read."""

    concurrency: ConcurrencyLimit
    per_caller: CallerConcurrencyLimit | None = None
    rate: RateLimit | None = None
    stream_write_timeout: float | None = None
    concurrent_reads: int = 32

    def enter(self, caller: str) -> None:
        """Admit one call of `caller`, or raise ResourceExhausted (nothing is held then)."""
        if self.rate is not None:
            self.rate.take(caller)
        self.concurrency.enter()
        if self.per_caller is not None:
            try:
                self.per_caller.enter(caller)
            except ResourceExhausted:
                self.concurrency.leave()
                raise

    def leave(self, caller: str) -> None:
        """Release what `enter` admitted."""
        self.concurrency.leave()
        if self.per_caller is not None:
            self.per_caller.leave(caller)
