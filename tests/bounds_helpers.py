"""Helpers for the hostile-caller bounds: a probe caller, an oversized flood, /proc memory.

The probe is what any other caller of the gateway would notice: one ordinary
Submit every 100 ms, each with its own deadline.
"""

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from scripts.stack import Gateway
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

PROBE_DEADLINE = 5.0
Metadata = tuple[tuple[str, str], ...]


def own_gateway(stack_env: dict[str, str], log_dir: Path, **settings: str) -> Gateway:
    """A gateway of the test's own, with `settings` over the session's environment."""
    return Gateway({**stack_env, **settings}, log_dir)


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid` in MiB, from /proc (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS line for process {pid}")


@dataclass
class Probe:
    """Submits tasks.add every 100 ms on a channel of its own until stopped."""

    address: str
    metadata: Metadata = ()
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        request = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]")
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            while not self._stop.wait(0.1):
                started = time.monotonic()
                try:
                    stub.Submit(request, timeout=PROBE_DEADLINE, metadata=self.metadata)
                    self.latencies.append(time.monotonic() - started)
                except grpc.RpcError as error:
                    self.failures.append(f"{error.code().name}: {error.details()}")

    def __enter__(self) -> "Probe":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(PROBE_DEADLINE + 5)

    def median_ms(self) -> float:
        """The median probe latency in milliseconds."""
        return statistics.median(self.latencies) * 1000


async def _flood_one(
    stub: "pb_grpc.TaskServiceAsyncStub",
    request: pb.SubmitRequest,
    until: float,
    metadata: Metadata,
) -> list[grpc.StatusCode]:
    codes = []
    while time.monotonic() < until:
        try:
            await stub.Submit(request, timeout=10, metadata=metadata)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    return codes


async def _flood(
    address: str, request: pb.SubmitRequest, calls: int, seconds: float, metadata: Metadata
) -> list[grpc.StatusCode]:
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 8 << 20)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(8)]
    try:
        stubs: list[pb_grpc.TaskServiceAsyncStub] = [
            pb_grpc.TaskServiceStub(channel) for channel in channels
        ]
        until = time.monotonic() + seconds
        flooding = (
            _flood_one(stubs[i % len(stubs)], request, until, metadata) for i in range(calls)
        )
        return [code for codes in await asyncio.gather(*flooding) for code in codes]
    finally:
        for channel in channels:
            await channel.close()


def flood(
    address: str, request: pb.SubmitRequest, calls: int, seconds: float, metadata: Metadata = ()
) -> list[grpc.StatusCode]:
    """`calls` Submits of `request` at once, again and again for `seconds`; the codes."""
    return asyncio.run(_flood(address, request, calls, seconds, metadata))
