"""Idempotency keys: one key and one request dispatch one task, however many calls race.

A key is claimed atomically (`SET NX GET`) for a fresh task id before anything is
published; the claim says whether the publish has happened, and until when the
call that holds it may still be publishing (its lease: the call's deadline). A
claim that is unpublished past its lease (its call failed, timed out or died
with its gateway, or its own write landed late) is taken over by the next call
with the same key, under the same task id. The task may then be published twice
under one id, and the workers' guard (worker/guard.py) runs it once; a key never
dispatches a second task id.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis.asyncio import Redis

from taskgate.server.errors import redis_unavailable
from taskgate.server.requests import Submission

_PREFIX = "taskgate:idempotency:"

# Replace the value only if it is still exactly the one this call saw; '' deletes it.
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return 1
"""


def fingerprint(submission: Submission) -> str:
    """A digest of everything that makes two submissions the same request."""
    canonical = json.dumps(
        [submission.task, submission.args, submission.kwargs, submission.options],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """Who holds an idempotency key: the task id, the request, and how far it got."""

    task_id: str
    fingerprint: str
    claimed_at: float
    published: bool = False
    lease_until: float = 0.0
    """Until when the holder may still be publishing; 0 once it has given up."""

    def lapsed(self, now: float) -> bool:
        """True when nobody is publishing this unpublished claim any more."""
        return not self.published and now >= self.lease_until

    def released(self) -> "Claim":
        """The claim, bound to its task id still, with nobody publishing it."""
        return replace(self, lease_until=0.0)

    def encode(self) -> str:
        """The stored form; compared byte for byte by the compare-and-set script."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, raw: Any) -> "Claim":
        """Parse a stored claim."""
        return cls(**json.loads(raw))


class IdempotencyKeys:
    """Claims, publishes and releases idempotency keys in the result backend's Redis."""

    def __init__(self, redis: Redis, retention_seconds: float) -> None:
        self._redis = redis
        self._retention = int(retention_seconds)
        self._compare_and_set = redis.register_script(_COMPARE_AND_SET)

    async def claim(self, key: str, claim: Claim) -> Claim | None:
        """Claim `key`; None when this call now holds it, else the existing claim."""
        with redis_unavailable("the result backend"):
            existing = await self._redis.set(
                _PREFIX + key, claim.encode(), nx=True, get=True, ex=self._retention
            )
        return None if existing is None else Claim.decode(existing)

    async def swap(self, key: str, seen: Claim, new: Claim | None) -> bool:
        """Replace `seen` by `new` (None: delete) only if `seen` is still stored."""
        with redis_unavailable("the result backend"):
            swapped = await self._compare_and_set(
                keys=[_PREFIX + key], args=[seen.encode(), new.encode() if new else ""]
            )
        return bool(swapped)

    async def mark_published(self, key: str, claim: Claim) -> Claim:
        """Record that the claim's task is in the broker."""
        published = replace(claim, published=True)
        await self.swap(key, claim, published)
        return published
