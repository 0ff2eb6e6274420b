"""The publish scripts of concurrent calls, many to a round trip.

Under load grpc hands the gateway one call a loop turn, so a round trip a turn would
be a round trip a call. Instead one script run (or pipeline of them) of single calls
is out at a time (`MOST_PIPELINES`): the calls that come meanwhile go together in the
next, sent at the end of the turn in which it came back; an idle gateway sends a lone
call at once. A batch of calls made together (`call_many`, SubmitBatch's) goes at
once, as a pipeline of its own.
Up to `MOST_PER_SCRIPT` calls share one EVALSHA: the script runs each call's part in
turn, under `pcall`, so each caller gets its own part's result or error and one
call's failure fails no other. Fewer commands is what saves: redis-py packs, sends
and parses each at tens of microseconds. The script is loaded again after a NOSCRIPT
(a restarted Redis), which is safe to retry: a script that was not found did not run.
"""

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

logger = logging.getLogger(__name__)

MOST_PER_SCRIPT = 128  # calls run by one script: Redis serves nobody else meanwhile
MOST_PIPELINES = 1  # round trips out at once; one run each: 422 µs CPU a Submit, 493 with 2

# ARGV: for each call, its number of keys and of arguments, then its arguments;
# KEYS: each call's keys in turn. `each(KEYS, ARGV)` is the script of one call.
_EVERY_CALL = """
local replies, count, key, arg = {}, 0, 1, 1
while arg <= #ARGV do
  local nkeys, nargs = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
  local keys, args = {}, {}
  for i = 1, nkeys do keys[i] = KEYS[key + i - 1] end
  for i = 1, nargs do args[i] = ARGV[arg + 1 + i] end
  key, arg = key + nkeys, arg + 2 + nargs
  local ok, reply = pcall(each, keys, args)
  if not ok and not (type(reply) == 'table' and reply.err) then
    reply = redis.error_reply(tostring(reply))
  end
  count = count + 1
  replies[count] = reply
end
return replies
"""


ScriptCall = tuple[Sequence[str], Sequence[str | int]]
"""One call's KEYS and ARGV."""


@dataclass
class _Waiting:
    call: ScriptCall
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ScriptBatcher:
    """Runs one Lua script for many callers, many to a round trip; `script` is the
    body of one call's, which reads its own KEYS and ARGV."""

    def __init__(self, redis: Redis, script: str) -> None:
        self._redis = redis
        self._script = f"local function each(KEYS, ARGV)\n{script}\nend\n{_EVERY_CALL}"
        self._sha = hashlib.sha1(self._script.encode()).hexdigest()
        self._pending: list[_Waiting] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._flush_due = False

    async def call(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run the script with `keys` and `args` in the next pipeline; its reply."""
        waiting = _Waiting((keys, args))
        self._pending.append(waiting)
        self._schedule()
        return await waiting.done

    def _schedule(self) -> None:
        """Send what waits at the end of this loop turn, unless MOST_PIPELINES are out:
        then it goes when one of them is back, with whatever came meanwhile."""
        if self._flush_due or not self._pending or len(self._sending) >= MOST_PIPELINES:
            return
        self._flush_due = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        batch, self._pending = self._pending, []
        sending = asyncio.ensure_future(self._send(batch))
        self._sending.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: "asyncio.Task[None]") -> None:
        self._sending.discard(sending)
        self._schedule()

    async def call_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run the script for each of `calls` (keys, args) now, in one pipeline beside any
        out already (three round trips after a NOSCRIPT): each call's reply, or its
        error as a value; a lost connection raises."""
        return await self._run(calls)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._run([waiting.call for waiting in batch])
        except BaseException as exc:  # every caller of this pipeline gets the error
            for waiting in batch:
                _settle(waiting, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            _settle(waiting, outcome)

    async def _run(self, batch: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply or error, from as many scripts as it takes, one round trip."""
        chunks = [
            batch[start : start + MOST_PER_SCRIPT]
            for start in range(0, len(batch), MOST_PER_SCRIPT)
        ]
        replies = await self._execute(chunks)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            logger.info("loading the publish script into Redis")
            await self._redis.script_load(self._script)
            again = await self._execute([chunks[i] for i in unknown])
            for i, reply in zip(unknown, again, strict=True):
                replies[i] = reply
        return [
            outcome
            for chunk, reply in zip(chunks, replies, strict=True)
            for outcome in _each(chunk, reply)
        ]

    async def _execute(self, chunks: list[Sequence[ScriptCall]]) -> list[Any]:
        commands = [_command(chunk) for chunk in chunks]
        if len(commands) == 1:  # a pipeline of one command costs a third more in redis-py
            keys, args = commands[0]
            try:
                return [await self._redis.evalsha(self._sha, len(keys), *keys, *args)]
            except ResponseError as exc:  # as a pipeline reports it: NOSCRIPT, WRONGTYPE...
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for keys, args in commands:
            pipe.evalsha(self._sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _command(chunk: Sequence[ScriptCall]) -> tuple[list[str], list[str | int]]:
    """The KEYS and ARGV of one script run for `chunk`."""
    keys = [key for call_keys, _ in chunk for key in call_keys]
    args: list[str | int] = []
    for call_keys, call_args in chunk:
        args += (len(call_keys), len(call_args), *call_args)
    return keys, args


def _each(chunk: Sequence[ScriptCall], reply: Any) -> list[Any]:
    """Each call's outcome from its script's reply: all of them its error, if it failed."""
    if isinstance(reply, BaseException):
        return [reply] * len(chunk)
    if not isinstance(reply, list) or len(reply) != len(chunk):
        raise RuntimeError(f"the publish script answered {reply!r} for {len(chunk)} calls")
    return reply


def _settle(waiting: _Waiting, reply: Any) -> None:
    if waiting.done.done():  # its caller went away; the script ran (or failed) all the same
        return
    if isinstance(reply, BaseException):
        waiting.done.set_exception(reply)
    else:
        waiting.done.set_result(reply)
