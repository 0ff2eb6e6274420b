"""What the reclaimer tests share: a gateway that sweeps often, and waiting for its sweeps."""

from functools import partial

import redis

from taskgate.server.publish.inflight import InflightKeys
from tests.fault_helpers import poll

GRACE, INTERVAL = 1.0, 0.25
# The documented bound (grace plus two sweeps), with slack for a loaded machine.
RECLAIM_BOUND = GRACE + 2 * INTERVAL + 10
RECLAIMED_LINE = "by a worker that never received it"


def sweeping(env: dict[str, str]) -> dict[str, str]:
    """`env` for a gateway that sweeps every INTERVAL copies older than GRACE."""
    return {**env, "TASKGATE_RECLAIM_GRACE": str(GRACE), "TASKGATE_RECLAIM_INTERVAL": str(INTERVAL)}


def looked_at_twice(client: redis.Redis, task_ids: list[str], keys: InflightKeys) -> None:
    """Wait until a sweep has looked at each task twice: a looked-at copy still waiting is
    moved to the back (scored anew), and a lost one is queued again at its second look."""
    for _ in range(2):
        before = {task_id: client.zscore(keys.index, task_id) for task_id in task_ids}
        assert None not in before.values(), before
        looked = partial(rescored, client, keys, before)
        poll(looked, "a sweep looked at every copy", RECLAIM_BOUND)


def rescored(client: redis.Redis, keys: InflightKeys, before: dict[str, float | None]) -> bool:
    """True when every task's in-flight score has grown past `before`."""
    return all(
        (client.zscore(keys.index, task_id) or 0) > (score or 0)
        for task_id, score in before.items()
    )
