"""One round trip per event-loop turn for the publish scripts of concurrent calls.

Calls made in the same loop iteration are sent together as one non-transactional
pipeline of EVALSHAs; each caller gets its own script's result or error, so one
call's failure fails no other. The script is loaded again after a NOSCRIPT (a
restarted Redis), which is safe to retry: a script that was not found did not run.
"""

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

logger = logging.getLogger(__name__)


@dataclass
class _Call:
    keys: Sequence[str]
    args: Sequence[str | int]
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ScriptBatcher:
    """Runs one Lua script for many callers, one pipeline per loop turn."""

    def __init__(self, redis: Redis, script: str) -> None:
        self._redis = redis
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run the script with `keys` and `args` in the next pipeline; its reply."""
        call = _Call(keys, args)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(call)
        return await call.done

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        sending = asyncio.ensure_future(self._send(batch))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._execute(batch)
            unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if unknown:
                logger.info("loading the publish script into Redis")
                await self._redis.script_load(self._script)
                again = await self._execute([batch[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
        except BaseException as exc:  # every caller of this pipeline gets the error
            for call in batch:
                _settle(call, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(batch, replies, strict=True):
            _settle(call, reply)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for call in batch:
            pipe.evalsha(self._sha, len(call.keys), *call.keys, *call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _settle(call: _Call, reply: Any) -> None:
    if call.done.done():  # its caller went away; the script ran (or failed) all the same
        return
    if isinstance(reply, BaseException):
        call.done.set_exception(reply)
    else:
        call.done.set_result(reply)
