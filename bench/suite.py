"""One whole run: warm every front end up, then the same phases for each, interleaved."""

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from bench.frontends import (
    MAX_WAITS,
    AsyncFrontEnd,
    CeleryFrontEnd,
    FlowerApplyFrontEnd,
    FlowerAsyncApplyFrontEnd,
    TaskgateExecuteFrontEnd,
    TaskgateFrontEnd,
)
from bench.http import JsonClient
from bench.runner import (
    Numbers,
    celery_sequential,
    celery_windowed,
    run_concurrent,
    run_sequential,
)
from bench.services import BenchStack
from bench.settings import BenchSettings
from bench.stats import Tally
from scripts.stack import StackError
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import create_app


class BenchError(RuntimeError):
    """The run cannot give meaningful numbers; the message says why."""


@dataclass
class FrontEndResult:
    """Everything measured for one front end."""

    name: str
    sequential: Tally = field(default_factory=Tally)
    throughput: dict[int, Tally] = field(default_factory=dict)


class Contender(Protocol):
    """A front end as the suite drives it."""

    name: str

    async def sequential(self, xs: list[int], seconds: float) -> Tally:
        """Calls one after another."""

    async def concurrent(self, xs: list[int], callers: int, seconds: float) -> Tally:
        """Calls with `callers` tasks in flight."""


class AsyncContender:
    """A front end that runs on the suite's event loop."""

    def __init__(self, front: AsyncFrontEnd) -> None:
        self.name = front.name
        self._front = front

    async def sequential(self, xs: list[int], seconds: float) -> Tally:
        return await run_sequential(self._front, xs, seconds)

    async def concurrent(self, xs: list[int], callers: int, seconds: float) -> Tally:
        return await run_concurrent(self._front, xs, callers, seconds)


class CeleryContender:
    """Raw Celery, always on the same one thread (Celery's backend is per thread)."""

    def __init__(self, front: CeleryFrontEnd, thread: ThreadPoolExecutor) -> None:
        self.name = front.name
        self._front = front
        self._thread = thread

    async def sequential(self, xs: list[int], seconds: float) -> Tally:
        return await self._run(lambda: celery_sequential(self._front, xs, seconds))

    async def concurrent(self, xs: list[int], callers: int, seconds: float) -> Tally:
        return await self._run(lambda: celery_windowed(self._front, xs, callers, seconds))

    def _run(self, job: Callable[[], Tally]) -> Awaitable[Tally]:
        return asyncio.get_running_loop().run_in_executor(self._thread, job)


async def run_suite(stack: BenchStack, settings: BenchSettings) -> list[FrontEndResult]:
    """Build the clients of all front ends, run every phase, close the clients."""
    app = create_app(
        CelerySettings(broker_url=stack.url, result_backend=stack.url), load_tasks=False
    )
    thread = ThreadPoolExecutor(1, thread_name_prefix="raw-celery")
    wait = settings.wait_seconds
    http = JsonClient("127.0.0.1", stack.flower_port, timeout=wait * MAX_WAITS + 10)
    try:
        async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            contenders: list[Contender] = [
                CeleryContender(CeleryFrontEnd(app, wait), thread),
                AsyncContender(TaskgateFrontEnd(stub, wait)),
                AsyncContender(TaskgateExecuteFrontEnd(stub, wait)),
                AsyncContender(FlowerAsyncApplyFrontEnd(http, wait)),
                AsyncContender(FlowerApplyFrontEnd(http, wait)),
            ]
            return await _phases(contenders, stack, settings)
    finally:
        http.close()
        await asyncio.get_running_loop().run_in_executor(thread, app.close)
        thread.shutdown()


async def _phases(
    contenders: list[Contender], stack: BenchStack, settings: BenchSettings
) -> list[FrontEndResult]:
    numbers = Numbers()
    seconds = settings.phase_seconds
    results = [FrontEndResult(contender.name) for contender in contenders]
    for contender in contenders:
        warmup = await contender.sequential(numbers.take(settings.warmup_calls), seconds)
        if not warmup.clean:
            raise BenchError(f"{contender.name} failed its warm-up: {warmup.error_samples}")
    for calls in settings.split(settings.sequential_calls):
        for contender, result in zip(contenders, results, strict=True):
            phase = contender.sequential(numbers.take(calls), seconds)
            result.sequential.merge(await measured(stack, phase))
    for callers in settings.concurrencies:
        for tasks in settings.split(settings.throughput_tasks):
            for contender, result in zip(contenders, results, strict=True):
                phase = contender.concurrent(numbers.take(tasks), callers, seconds)
                tally = result.throughput.setdefault(callers, Tally())
                tally.merge(await measured(stack, phase))
    return results


async def measured(stack: BenchStack, phase: Awaitable[Tally]) -> Tally:
    """Run one phase, note the CPU every process used meanwhile, check nothing died."""
    before = stack.cpu_seconds()
    tally = await phase
    after = stack.cpu_seconds()
    tally.cpu = {name: after[name] - before[name] for name in before}
    _check_alive(stack)
    return tally


def _check_alive(stack: BenchStack) -> None:
    for process in stack.processes():
        if not process.alive():
            raise StackError(f"{process.name} died:\n{process.log_text()[-3000:]}")
