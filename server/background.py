"""Stopping the gateway's background loops (readiness, sweeps, reads), for sure."""

import asyncio
import contextlib
from typing import Any

_CANCEL_AGAIN_SECONDS = 0.1


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended.

    One cancellation is not always enough: a Redis read cancelled at the wrong moment
    was seen to swallow it (redis-py 8.1), leaving the loop asleep until its next turn
    and a SIGTERM'd gateway hanging for ever (3 of 8 stops right after start). So the
    task is cancelled again until it ends.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=_CANCEL_AGAIN_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        await task
