"""The phases no worker takes part in: Submit alone, SubmitBatch, GetStatus, concurrent waits.

Contenders take turns in every round, as in `bench.suite`, and the idle queue is
emptied after each turn so that Redis does not grow with the run.
"""

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from bench.ceiling import CEILING_TASK_ID
from bench.frontends import TASK
from bench.http import JsonClient
from bench.idle import (
    CALL_TIMEOUT,
    IDLE_QUEUE,
    FlowerSend,
    GrpcStatus,
    GrpcSubmit,
    send_task_loop,
    submit_batches,
)
from bench.runner import Numbers, run_checked
from bench.services import BenchStack
from bench.settings import BenchSettings
from bench.stats import Tally
from bench.suite import BenchError, measured
from bench.waits import WaitsResult, concurrent_waits
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # the async stub class exists only in the generated .pyi
    from taskgate.v1.task_service_pb2_grpc import TaskServiceAsyncStub
from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import create_app

TASKGATE_SUBMIT = "taskgate Submit"
CEILING_SUBMIT = "empty-handler ceiling Submit"
SEND_TASK_LOOP = "send_task loop"
FLOWER_SEND = "Flower send-task"
TASKGATE_STATUS = "taskgate GetStatus"
CEILING_STATUS = "empty-handler ceiling GetStatus"
STATUS_CALLERS = 64
WARMUP_CALLS, WARMUP_CALLERS = 100, 16
K = TypeVar("K")

Phase = Callable[[list[int], int], Awaitable[Tally]]
"""Runs the calls of one turn: (arguments, calls in flight) -> what they measured."""


@dataclass
class IdleResults:
    """Everything the worker-free phases measured, by contender name."""

    submit: dict[str, dict[int, Tally]] = field(default_factory=dict)
    batch: dict[int, Tally] = field(default_factory=dict)
    status: dict[str, Tally] = field(default_factory=dict)
    waits: WaitsResult | None = None

    def tallies(self) -> list[tuple[str, Tally]]:
        """Every tally with a name that says which phase it is."""
        found = [(f"{n}, {c} in flight", t) for n, by in self.submit.items() for c, t in by.items()]
        found += [(f"SubmitBatch of {size}", t) for size, t in self.batch.items()]
        return found + [
            (f"{name}, {STATUS_CALLERS} in flight", t) for name, t in self.status.items()
        ]

    @property
    def clean(self) -> bool:
        """True when every call of every phase answered right."""
        waits_clean = self.waits is not None and self.waits.clean
        return waits_clean and all(tally.clean for _, tally in self.tallies())


async def run_idle_suite(
    stack: BenchStack, settings: BenchSettings, submit_only: bool = False
) -> IdleResults:
    """Open the clients, run every worker-free phase, close the clients; `submit_only`:
    only Submit (taskgate, the ceiling, the send_task loop) and SubmitBatch."""
    app = create_app(
        CelerySettings(broker_url=stack.url, result_backend=stack.url), load_tasks=False
    )
    thread = ThreadPoolExecutor(1, thread_name_prefix="send-task-loop")
    http = JsonClient("127.0.0.1", stack.flower_port, timeout=CALL_TIMEOUT)
    try:
        async with (
            grpc.aio.insecure_channel(stack.gateway.address) as gateway_channel,
            grpc.aio.insecure_channel(stack.ceiling_address) as ceiling_channel,
        ):
            gateway = pb_grpc.TaskServiceStub(gateway_channel)
            ceiling = pb_grpc.TaskServiceStub(ceiling_channel)
            seconds = settings.phase_seconds

            def loop_phase(xs: list[int], callers: int) -> Awaitable[Tally]:
                return asyncio.get_running_loop().run_in_executor(
                    thread, send_task_loop, app, xs, seconds
                )

            submitters = {
                TASKGATE_SUBMIT: _checked(GrpcSubmit(gateway), seconds),
                CEILING_SUBMIT: _checked(GrpcSubmit(ceiling), seconds),
                SEND_TASK_LOOP: loop_phase,
            }
            if submit_only:
                return await _submit_phases(stack, settings, submitters, gateway, Numbers())
            submitters[FLOWER_SEND] = _checked(FlowerSend(http), seconds)
            return await _phases(stack, settings, submitters, gateway, ceiling)
    finally:
        http.close()
        await asyncio.get_running_loop().run_in_executor(thread, app.close)
        thread.shutdown()
        stack.purge(IDLE_QUEUE)


async def _phases(
    stack: BenchStack,
    settings: BenchSettings,
    submitters: dict[str, Phase],
    gateway: "TaskServiceAsyncStub",
    ceiling: "TaskServiceAsyncStub",
) -> IdleResults:
    seconds, numbers = settings.phase_seconds, Numbers()
    results = await _submit_phases(stack, settings, submitters, gateway, numbers)
    status = {
        TASKGATE_STATUS: _checked(GrpcStatus(gateway, await _finished_task(gateway)), seconds),
        CEILING_STATUS: _checked(GrpcStatus(ceiling, CEILING_TASK_ID), seconds),
    }
    turns = _Turns(settings.status_calls, (STATUS_CALLERS,), numbers)
    for name, tally in (await _turns(stack, settings, status, turns)).items():
        results.status[name] = tally[STATUS_CALLERS]
    xs = numbers.take(settings.concurrent_waits)
    pid = stack.gateway.popen.pid
    waits = concurrent_waits(stack.gateway.address, pid, xs, settings.concurrent_wait_seconds)
    results.waits = await waits
    return results


async def _submit_phases(
    stack: BenchStack,
    settings: BenchSettings,
    submitters: dict[str, Phase],
    gateway: "TaskServiceAsyncStub",
    numbers: Numbers,
) -> IdleResults:
    """Every submitter warmed up, then at every concurrency; then SubmitBatch."""
    for name, phase in submitters.items():
        warmup = await phase(numbers.take(WARMUP_CALLS), WARMUP_CALLERS)
        if not warmup.clean:
            raise BenchError(f"{name} failed its warm-up: {warmup.error_samples}")
    results = IdleResults()
    turns = _Turns(settings.idle_tasks, settings.idle_concurrencies, numbers)
    results.submit = await _turns(stack, settings, submitters, turns)
    seconds = settings.phase_seconds
    batchers = {size: _batcher(gateway, size, seconds) for size in settings.batch_sizes}
    for size, tally in (
        await _turns(stack, settings, batchers, _Turns(settings.batch_tasks, (1,), numbers))
    ).items():
        results.batch[size] = tally[1]
    return results


@dataclass(frozen=True)
class _Turns:
    """How many calls each contender makes, and with how many in flight."""

    calls: int
    in_flight: tuple[int, ...]
    numbers: Numbers
    """The run's arguments, never repeated."""


async def _turns(
    stack: BenchStack, settings: BenchSettings, contenders: dict[K, Phase], turns: _Turns
) -> dict[K, dict[int, Tally]]:
    """Every contender at every concurrency, taking turns in each round."""
    found: dict[K, dict[int, Tally]] = {name: {} for name in contenders}
    for callers in turns.in_flight:
        for share in settings.split(turns.calls):
            for name, phase in contenders.items():
                tally = await measured(stack, phase(turns.numbers.take(share), callers))
                stack.purge(IDLE_QUEUE)
                found[name].setdefault(callers, Tally()).merge(tally)
    return found


def _checked(check: Callable[[int], Awaitable[str | None]], seconds: float) -> Phase:
    return lambda xs, callers: run_checked(check, xs, callers, seconds)


def _batcher(stub: "TaskServiceAsyncStub", size: int, seconds: float) -> Phase:
    return lambda xs, callers: submit_batches(stub, xs, size, seconds)


async def _finished_task(stub: "TaskServiceAsyncStub") -> str:
    """A task that the worker ran to SUCCESS, for GetStatus to read."""
    submit = pb.SubmitRequest(task=TASK, args_json="[20, 20]")
    task_id = (await stub.Submit(submit, timeout=CALL_TIMEOUT)).task_id
    wait = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=10))
    reply = await stub.GetResult(wait, timeout=CALL_TIMEOUT)
    if reply.state != pb.TASK_STATE_SUCCESS or reply.result_json != "40":
        raise BenchError(f"tasks.add(20, 20) ended {pb.TaskState.Name(reply.state)}")
    return task_id
