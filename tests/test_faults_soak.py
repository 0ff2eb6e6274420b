"""A short soak: steady clients while pool processes are killed and the worker restarts.

Eight clients submit and collect counting tasks for TASKGATE_SOAK_SECONDS
(default 20; set it higher for a longer run) while a pool process is killed
every few seconds and the whole worker is killed and replaced once. The
stack is private to this module: its own redis-server, worker and gateway.
"""

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, ManagedProcess, RedisServer, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import (
    await_result,
    children,
    fault_env,
    managed,
    poll,
    quick_redelivery_options,
    request,
    running,
    runs,
    seconds,
    write_config,
)

SOAK_SECONDS = float(os.environ.get("TASKGATE_SOAK_SECONDS") or 20)
CLIENTS = 8
KILL_EVERY = 3.0
# The pause between one client's submissions: the soak's pacing, not a wait.
CLIENT_PACE = 0.2
HOLD_SECONDS = 0.3
# With the Redis broker, the tasks of a killed worker come back after the visibility
# timeout (30 s by default); a short one, swept every second, fits in a soak.
VISIBILITY_SECONDS = 3
COLLECT_SECONDS = 60.0


@dataclass
class Stack:
    """Redis and a gateway; `env` starts workers with the short visibility timeout."""

    redis: RedisServer
    env: dict[str, str]
    log_dir: Path
    address: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis and a gateway; the soak starts (and kills) its own workers."""
    log_dir = tmp_path_factory.mktemp("faults-soak")
    config_dir = tmp_path_factory.mktemp("faults-soak-config")
    write_config(
        config_dir,
        broker_transport_options=quick_redelivery_options(VISIBILITY_SECONDS),
    )
    with ExitStack() as processes:
        redis_server = processes.enter_context(managed(RedisServer(log_dir)))
        env = fault_env(redis_server.url, redis_server.url, config_dir)
        gateway = processes.enter_context(managed(Gateway(env, log_dir)))
        yield Stack(redis_server, env, log_dir, gateway.address)


@dataclass
class Client:
    """Submits counting tasks until told to stop; remembers what was acknowledged."""

    number: int
    run_id: str
    stub: pb_grpc.TaskServiceStub
    accepted: dict[str, str] = field(default_factory=dict)
    """Task id -> run-count key, for every Submit answered OK."""
    finished: set[str] = field(default_factory=set)
    """Task ids already seen SUCCESS."""
    by_idempotency_key: dict[str, set[str]] = field(default_factory=dict)
    """Idempotency key -> every task id a Submit with it returned."""
    errors: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        """Submit, collect, pause; until `stop` is set (run in a thread)."""
        iteration = 0
        while not stop.is_set():
            iteration += 1
            try:
                task_id = self._submit(iteration)
                self._collect(task_id)
            except grpc.RpcError as exc:
                self.errors.append(f"client {self.number}: {exc.code().name}: {exc.details()}")
            stop.wait(CLIENT_PACE)

    def _submit(self, iteration: int) -> str:
        if iteration % 3 == 0:
            # Every client uses the same key at the same iteration: they race on it,
            # and each submits it twice, as a client retrying would.
            key = f"{self.run_id}-idem-{iteration}"
            submission = request("tests.count_run", key, idempotency_key=key)
            ids = {self.stub.Submit(submission, timeout=10).task_id for _ in range(2)}
            self.by_idempotency_key.setdefault(key, set()).update(ids)
            task_id = ids.pop()
        elif iteration % 3 == 1:
            key = f"{self.run_id}-hold-{uuid.uuid4().hex}"
            submission = request("tests.faults.hold", key, HOLD_SECONDS)
            task_id = self.stub.Submit(submission, timeout=10).task_id
        else:
            key = f"{self.run_id}-count-{uuid.uuid4().hex}"
            task_id = self.stub.Submit(request("tests.count_run", key), timeout=10).task_id
        self.accepted[task_id] = key
        return task_id

    def _collect(self, task_id: str) -> None:
        ask = pb.GetResultRequest(task_id=task_id, wait=seconds(1))
        response = self.stub.GetResult(ask, timeout=5)
        if response.ready:
            if response.state != pb.TASK_STATE_SUCCESS:
                self.errors.append(f"task {task_id} ended {pb.TaskState.Name(response.state)}")
            self.finished.add(task_id)


@dataclass
class Chaos:
    """Kills a pool process every KILL_EVERY seconds, and the whole worker once."""

    stack: Stack
    worker: ManagedProcess
    workers: list[ManagedProcess] = field(default_factory=list)
    pool_kills: int = 0
    errors: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event, restart_at: float) -> None:
        """Until `stop` is set (run in a thread); the worker is replaced at `restart_at`."""
        try:
            while not stop.wait(KILL_EVERY):
                if not self.workers and time.monotonic() >= restart_at:
                    self._replace_worker()
                else:
                    self._kill_a_pool_process()
        except Exception as exc:  # reported by the test, which fails on it
            self.errors.append(repr(exc))

    def _kill_a_pool_process(self) -> None:
        pool = children(self.worker.popen.pid)
        if pool:
            os.kill(random.choice(pool), signal.SIGKILL)
            self.pool_kills += 1

    def _replace_worker(self) -> None:
        pool = children(self.worker.popen.pid)
        self.worker.popen.kill()  # the pool dies with it (Celery sets PDEATHSIG)
        self.worker.stop()
        poll(lambda: not any(running(pid) for pid in pool), "the old pool died", timeout=10)
        self.worker = start_worker(self.stack.env, self.stack.log_dir)
        self.workers.append(self.worker)


def _final_states(stub: pb_grpc.TaskServiceStub, clients: list[Client]) -> dict[str, str]:
    """Wait for every acknowledged task not yet seen finished; task id -> state name."""
    deadline = time.monotonic() + COLLECT_SECONDS
    states: dict[str, str] = {}
    for client in clients:
        for task_id in client.accepted:
            if task_id in client.finished:
                states[task_id] = "TASK_STATE_SUCCESS"
                continue
            remaining = max(deadline - time.monotonic(), 1.0)
            states[task_id] = pb.TaskState.Name(await_result(stub, task_id, remaining).state)
    return states


def test_acknowledged_tasks_all_finish_while_workers_die(stack: Stack) -> None:
    """Checks at-least-once delivery under churn: `task_acks_late`,
    `task_reject_on_worker_lost`, the visibility timeout, and idempotency keys.

    While the clients run, a pool process is SIGKILLed every 3 s and, midway,
    the whole worker is SIGKILLed and a new one started (the workers use a 3 s
    visibility timeout; see test_faults_worker.py for why). At the end every
    acknowledged task must reach SUCCESS, every task's run counter must be at
    least 1, no Submit or GetResult may fail, and each idempotency key, raced
    by all clients and retried by each, must map to exactly one task id.
    Without acks-late and reject-on-worker-lost, killed tasks end FAILURE
    (WorkerLostError) or never finish; without the idempotency claim, a key
    would map to several ids.
    """
    run_id = uuid.uuid4().hex[:8]
    stop = threading.Event()
    with ExitStack() as resources:
        first = resources.enter_context(managed(start_worker(stack.env, stack.log_dir)))
        chaos = Chaos(stack, first)
        resources.callback(lambda: [worker.stop() for worker in chaos.workers])
        channels = [
            resources.enter_context(grpc.insecure_channel(stack.address)) for _ in range(CLIENTS)
        ]
        clients = [
            Client(n, run_id, pb_grpc.TaskServiceStub(channel))
            for n, channel in enumerate(channels)
        ]
        threads = [threading.Thread(target=client.run, args=(stop,)) for client in clients]
        restart_at = time.monotonic() + SOAK_SECONDS / 2
        threads.append(threading.Thread(target=chaos.run, args=(stop, restart_at)))
        for thread in threads:
            thread.start()
        stop.wait(SOAK_SECONDS)  # the soak's length
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()

        assert chaos.errors == []
        assert [error for client in clients for error in client.errors] == []
        assert len(chaos.workers) == 1, "the worker was never replaced"
        assert chaos.pool_kills >= 2
        states = _final_states(clients[0].stub, clients)

    assert set(states.values()) == {"TASK_STATE_SUCCESS"}
    with stack.redis.client() as client:
        keys = {key for c in clients for key in c.accepted.values()}
        assert all(runs(client, key) >= 1 for key in keys)
    by_key: dict[str, set[str]] = {}
    for c in clients:
        for key, ids in c.by_idempotency_key.items():
            by_key.setdefault(key, set()).update(ids)
    assert by_key, "no idempotency key was used"
    assert {key: ids for key, ids in by_key.items() if len(ids) > 1} == {}
