"""When to try a call again: UNAVAILABLE only, with exponential backoff and full jitter.

Only calls that are safe to repeat are retried. Reads (status, result, watch, tasks)
and Cancel (revoking twice changes nothing) always are. A Submit only with an
idempotency key: UNAVAILABLE does not say whether the first try reached the broker,
and without a key a second try could queue the task twice; with one, the gateway
returns the first task id instead.
"""

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from taskgate.errors import TaskgateError, Unavailable


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, a call that met UNAVAILABLE is tried again."""

    attempts: int = 5
    """Tries in all, the first included; 1 never retries."""
    initial_backoff: float = 0.2
    """The longest pause (seconds) before the second try; each pause is random below its cap."""
    max_backoff: float = 5.0
    """The cap on any pause."""
    multiplier: float = 2.0
    """How much the cap grows from one pause to the next."""

    def pauses(self) -> Iterator[float]:
        """The pauses before the second, third... tries ("full jitter", so that many
        callers cut off at once do not come back at once)."""
        for retry in range(self.attempts - 1):
            cap = min(self.max_backoff, self.initial_backoff * self.multiplier**retry)
            yield random.uniform(0, cap)


NO_RETRIES = RetryPolicy(attempts=1)


class Deadline:
    """The end of a call's `timeout`, shared by all its tries; None means no deadline."""

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left for the next try (never negative), or None without a deadline."""
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def allows(self, pause: float) -> bool:
        """True when a try after `pause` seconds would still start before the deadline."""
        return self._end is None or time.monotonic() + pause < self._end


class Attempts:
    """The retry schedule of one call."""

    def __init__(self, policy: RetryPolicy, deadline: Deadline) -> None:
        self._policy = policy
        self._pauses = policy.pauses()
        self.deadline = deadline

    def reset(self) -> None:
        """Start the schedule again: the call got through (a stream sent a message)."""
        self._pauses = self._policy.pauses()

    def pause_after(self, error: TaskgateError) -> float | None:
        """The pause before trying again after `error`, or None to give up."""
        if not isinstance(error, Unavailable):
            return None
        pause = next(self._pauses, None)
        if pause is None or not self.deadline.allows(pause):
            return None
        return pause
