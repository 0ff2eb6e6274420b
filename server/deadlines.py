"""When a wait must end so that its reply still beats the caller's deadline.

The deadline a server sees is the caller's rounded up (see `header_rounding`),
a reply takes time to leave once its wait ends, and waits that end together
leave one after another: a thousand GetResult calls with wait = deadline,
fired at once, all missed a fixed 50 ms margin (DEADLINE_EXCEEDED instead of
ready=false). So each wait keeps, before its deadline, a margin for the
replies of the waits already due to end just before that deadline: the
ends of the waits in flight are kept one reply's time apart, so the later of
two such waits ends earlier, and their replies leave one by one.
"""

import asyncio
import bisect
import contextlib
import math
from collections.abc import Iterator

from google.protobuf.duration_pb2 import Duration

from taskgate.server import times

MARGIN_SECONDS = 0.1
"""What a lone wait keeps before its deadline, so the reply (ready=false) still arrives.
A single reply on a loaded machine (a GC pause, a busy core) was seen 60 ms late."""

REPLY_SECONDS = 0.002
"""How far apart waits ending together end: twice what one reply cost the gateway to
send (about 1 ms with the access log and metrics on), so a slower machine keeps up."""


def header_rounding(time_remaining: float) -> float:
    """How much later than the caller's deadline ours may be, in seconds.

    gRPC C-core sends a deadline as a `grpc-timeout` header of at most three
    significant digits, rounded up (src/core/lib/transport/timeout_encoding.cc):
    a 60 s timeout arrives in 100 ms steps, a 5 s one in 10 ms steps.
    """
    if time_remaining < 1:
        return 0.001
    return float(10 ** (math.floor(math.log10(time_remaining)) - 2))


def requested_wait(wait: Duration | None) -> float:
    """The wait a request asks for, in seconds (0 when it asks for none)."""
    return times.seconds(wait, "wait") if wait is not None else 0.0


class WaitEnds:
    """The end of every wait in flight, at least one reply's time apart near deadlines.

    A new wait ends at the latest time before its deadline (less `margin`)
    that is `per_reply` away from every other end; in a crowd that means just
    below the run of ends packed there. A wait whose deadline leaves room for
    the replies of every wait in flight ends when it asked to: its reply is on
    time however many leave with it. A wait that ends early (its task
    finished) gives its place back.
    """

    def __init__(self, margin: float = MARGIN_SECONDS, per_reply: float = REPLY_SECONDS) -> None:
        self._margin = margin
        self._per_reply = per_reply
        self._ends: list[float] = []  # event-loop times, sorted

    def __len__(self) -> int:
        return len(self._ends)

    @contextlib.contextmanager
    def reserve(self, wait: float, time_remaining: float | None, cap: float) -> Iterator[float]:
        """The event-loop time at which this wait ends, held for the duration of the block:
        at most `wait` (and `cap`) seconds from now, and a margin before the deadline that
        `time_remaining` gives, wider as more waits end just before it."""
        now = asyncio.get_running_loop().time()
        asked = now + min(wait, cap)
        if time_remaining is None:
            end = asked
        else:
            margin = self._margin + header_rounding(time_remaining)
            latest = now + time_remaining - margin
            room = (len(self._ends) + 1) * self._per_reply
            end = asked if asked + room <= latest else self._place(min(asked, latest))
        # A crowd can push the end below now; the clamped end goes where it sorts, so
        # that the list stays sorted and the removal below finds it.
        end = max(end, now)
        bisect.insort(self._ends, end)
        try:
            yield end
        finally:
            del self._ends[bisect.bisect_left(self._ends, end)]

    def _place(self, latest: float) -> float:
        """The latest end at or before `latest` clear of the others."""
        ends, gap = self._ends, self._per_reply
        end = latest
        index = bisect.bisect_right(ends, end)
        if index < len(ends) and ends[index] - end < gap:
            end = ends[index] - gap  # just below the end above, too close
        while index > 0 and end - ends[index - 1] < gap:
            index = self._run_start(index - 1)
            end = ends[index] - gap  # below the whole run packed under us
        return end

    def _run_start(self, top: int) -> int:
        """The first index of the run of ends packed one gap apart that ends at `top`."""
        ends, gap = self._ends, self._per_reply
        low, high = 0, top  # the answer lies in [low, high]
        while low < high:
            middle = (low + high) // 2
            if ends[top] - ends[middle] <= (top - middle) * gap + gap / 2:
                high = middle
            else:
                low = middle + 1
        return low
