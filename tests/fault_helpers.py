"""Helpers shared by the fault tests: private stacks, process surgery, polls with deadlines.

Every fault test kills or freezes a real process, so each module builds its
own stack (its own redis-server, so no other test's worker takes its
messages). A wait here is always a poll with a deadline, never a bare sleep.
"""

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import redis
from google.protobuf.duration_pb2 import Duration

from scripts.stack import REPO_ROOT, ManagedProcess, RedisServer, celery_env
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from taskgate.worker.factory import SAFE_DEFAULTS
from tests.fault_tasks import PIDS_PREFIX
from tests.support_tasks import RUNS_PREFIX

P = TypeVar("P", bound=ManagedProcess)
T = TypeVar("T")

TASK_MODULES = "taskgate.worker.tasks,tests.support_tasks,tests.fault_tasks"
CONFIG_MODULE = "fault_celeryconfig"
POLL_SECONDS = 0.02


def transport_options(**overrides: Any) -> dict[str, Any]:
    """The safe `broker_transport_options` with `overrides`.

    A configuration module replaces the whole dict, so the socket timeouts
    are copied in: only the overridden options change.
    """
    return {**SAFE_DEFAULTS["broker_transport_options"], **overrides}


def quick_redelivery_options(visibility_timeout: float) -> dict[str, Any]:
    """Transport options that give an unacknowledged message back soon after `visibility_timeout`.

    kombu looks for overdue messages every 10 s, scanning only every 10th time;
    looking every second makes a redelivery test take seconds, not minutes.
    """
    return transport_options(
        visibility_timeout=visibility_timeout,
        unacked_restore_interval=1,
        unacked_restore_throttle=1,
    )


def write_config(directory: Path, **settings: Any) -> Path:
    """Write a `celeryconfig.py`-style module named CONFIG_MODULE into `directory`."""
    lines = [f"{name} = {value!r}" for name, value in settings.items()]
    path = directory / f"{CONFIG_MODULE}.py"
    path.write_text('"""Celery settings for a fault test."""\n\n' + "\n".join(lines) + "\n")
    return path


def fault_env(
    broker_url: str, backend_url: str, config_dir: Path | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a worker or gateway that runs and allows the test-only tasks.

    With `config_dir`, the CONFIG_MODULE written there is loaded too.
    """
    path = [str(config_dir)] if config_dir else []
    env = celery_env(
        broker_url,
        backend_url,
        TASKGATE_TASK_MODULES=TASK_MODULES,
        TASKGATE_TASKS="tasks.*,tests.*",
        PYTHONPATH=os.pathsep.join([*path, str(REPO_ROOT)]),
        **extra,
    )
    if config_dir:
        env["CELERY_CONFIG_MODULE"] = CONFIG_MODULE
    return env


@contextmanager
def managed(process: P, stop_timeout: float = 15.0) -> Iterator[P]:
    """Yield a started process; stop it (SIGTERM, then SIGKILL) on the way out."""
    try:
        yield process
    finally:
        process.stop(stop_timeout)


class Load(Protocol):
    """Calls made one after another on a thread, until stopped."""

    def run(self) -> None: ...

    def stop(self) -> None: ...


L = TypeVar("L", bound=Load)


@contextmanager
def in_background(load: L, join_timeout: float = 60.0) -> Iterator[L]:
    """Run `load` on a thread of its own for the duration of the block."""
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load.stop()
        thread.join(timeout=join_timeout)


@dataclass
class BackendStack:
    """A broker and a result backend that a test replaces (`backends[-1]` is the current
    one); with `appendonly`, a backend started again reloads what the last one stored."""

    broker: RedisServer
    backends: list[RedisServer]
    log_dir: Path
    stub: pb_grpc.TaskServiceStub
    appendonly: bool = False

    @property
    def backend(self) -> RedisServer:
        """The current result backend."""
        return self.backends[-1]

    def kill_backend(self) -> None:
        """SIGKILL the backend: no shutdown, no final flush."""
        self.backend.popen.kill()
        self.backend.stop()

    def start_backend_again(self) -> None:
        """Start a backend on the stopped one's port (and directory)."""
        port = self.backend.port
        self.backends.append(RedisServer(self.log_dir, port=port, appendonly=self.appendonly))


# --- polling ---------------------------------------------------------------------------


def poll(check: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
    """Poll `check` until it is true; fail naming `what` after `timeout` s; the seconds taken."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what} within {timeout}s"
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


# --- processes -------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: fields 3 (state), 4 (ppid), ..."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rpartition(")")[2].split()


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`: a prefork worker's pool processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = _stat_fields(int(entry.name))[:2]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def parent_of(pid: int) -> int:
    """The parent pid of `pid`."""
    return int(_stat_fields(pid)[1])


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def thread_count(pid: int) -> int:
    """How many threads `pid` has, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for {pid}")


# --- evidence the tasks leave in the backend's Redis ------------------------------------


def runs(client: redis.Redis, key: str) -> int:
    """How many times a counting task ran under `key`."""
    return int(client.get(RUNS_PREFIX + key) or 0)


def run_pids(client: redis.Redis, key: str) -> list[int]:
    """The pids of the pool processes that ran `tests.faults.hold` under `key`, in order."""
    return [int(pid) for pid in client.lrange(PIDS_PREFIX + key, 0, -1)]


def subscribed(client: redis.Redis, task_id: str) -> bool:
    """True when someone (the gateway, waiting) subscribes to the task's result channel."""
    counts: list[tuple[bytes | str, int]] = client.pubsub_numsub(f"celery-task-meta-{task_id}")
    return counts[0][1] > 0


def start_waiting(
    backend: RedisServer, task_id: str, start: Callable[[], T], *, settled: bool = True
) -> T:
    """Run `start`, which begins a call that waits on the task; return its result once
    the gateway has subscribed to the task's channel and then read the task's state (as
    it does once Redis confirms the subscription), both seen with MONITOR.

    With `settled`, also wait until Redis has sent its answer to that read: a PING
    answered afterwards proves it, since Redis writes the replies of one event-loop
    pass before it reads the next commands. The call then waits for a change.
    """
    key = f"celery-task-meta-{task_id}"
    with backend.client() as client, client.monitor() as monitor:
        started = start()
        seen_subscribe = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            command = monitor.next_command()["command"]  # socket timeout: 5 s
            if command == f"SUBSCRIBE {key}":
                seen_subscribe = True
            elif seen_subscribe and command == f"GET {key}":
                if settled:
                    client.ping()
                return started
    raise AssertionError(f"the gateway did not start waiting on {task_id} within 5s")


# --- calls -----------------------------------------------------------------------------


def seconds(value: float) -> Duration:
    """A protobuf Duration of `value` seconds."""
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def unique(prefix: str = "") -> str:
    """A fresh key for a counting task."""
    return f"{prefix}{uuid.uuid4().hex}"


def request(task: str, *args: object, idempotency_key: str = "") -> pb.SubmitRequest:
    """A SubmitRequest for `task(*args)`."""
    return pb.SubmitRequest(
        task=task, args_json=json.dumps(list(args)), idempotency_key=idempotency_key
    )


def submit(stub: pb_grpc.TaskServiceStub, task: str, *args: object, timeout: float = 10) -> str:
    """Submit `task(*args)`; its task id."""
    return stub.Submit(request(task, *args), timeout=timeout).task_id


def await_result(
    stub: pb_grpc.TaskServiceStub, task_id: str, timeout: float = 30.0
) -> pb.GetResultResponse:
    """Wait with GetResult until the task is ready; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        wait = max(0.0, min(deadline - time.monotonic(), 10.0))
        ask = pb.GetResultRequest(task_id=task_id, wait=seconds(wait))
        response = stub.GetResult(ask, timeout=wait + 5)
        if response.ready:
            return response
        assert time.monotonic() < deadline, (
            f"task {task_id} not finished within {timeout}s: {pb.TaskState.Name(response.state)}"
        )


@dataclass(frozen=True)
class Outcome:
    """How a call ended, as its caller saw it."""

    code: grpc.StatusCode
    details: str
    seconds: float

    def __str__(self) -> str:
        return f"{self.code.name} after {self.seconds:.2f}s: {self.details}"


def outcome(call: Callable[[], object]) -> Outcome:
    """Run `call`; its status code (OK when it returned), details and duration."""
    started = time.monotonic()
    try:
        call()
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "", time.monotonic() - started)
    return Outcome(grpc.StatusCode.OK, "", time.monotonic() - started)
