"""Starts the pieces of a local taskgate as real processes: redis-server, workers, a gateway.

`make run` and the tests use the same launchers, so what the tests start is
what a newcomer runs. Each process writes to its own log file; readiness is
read from those logs or checked over the wire, with a deadline, never a sleep.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import redis

from taskgate.server.publish.inflight import InflightKeys
from taskgate.server.publish.message import KeyRules
from taskgate.server.purge import purge

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
_GATEWAY_READY = re.compile(r"taskgate listening on (\S+):(\d+)")
_METRICS_AT = re.compile(r"metrics on (http://\S+/metrics)")


class StackError(RuntimeError):
    """A piece of the stack could not be started; the message says what to do."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll `check` until it is true; raise StackError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what} was not ready within {timeout:.0f}s")
        time.sleep(0.05)


class ManagedProcess:
    """A child process whose output goes to a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            argv, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_text(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def wait_for_log(
        self, pattern: re.Pattern[str], timeout: float = READY_TIMEOUT
    ) -> re.Match[str]:
        """Wait until the log matches `pattern`; fail early, with the log, if the process dies."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            if not self.alive():
                raise StackError(f"{self.name} exited early:\n{self.log_text()[-3000:]}")
            match = pattern.search(self.log_text())
            if match:
                found.append(match)
            return bool(match)

        wait_until(check, self.name, timeout)
        return found[0]

    def started(self, pattern: re.Pattern[str], timeout: float = READY_TIMEOUT) -> re.Match[str]:
        """`wait_for_log` for a process being started: one that does not get there is
        stopped before the error is raised, so that a failed start leaves no process
        behind (nobody holds it yet to stop it)."""
        return self.stopped_unless(lambda: self.wait_for_log(pattern, timeout))

    def stopped_unless(self, ready: Callable[[], T]) -> T:
        """`ready()`'s answer; if it raises, the process is stopped first."""
        try:
            return ready()
        except BaseException:
            self.stop()
            raise

    def signal(self, signum: int) -> None:
        """Send `signum` to the process if it still runs."""
        if self.alive():
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self._log.close()
        return code


def redis_server_binary() -> str:
    """The redis-server on PATH, or a StackError saying how to install it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError(
            "redis-server is not on PATH; install it with "
            "'sudo apt-get install redis-server' (Debian/Ubuntu) or 'brew install redis'"
        )
    return binary


class RedisServer(ManagedProcess):
    """A private redis-server on loopback, keeping its files in `log_dir`."""

    def __init__(self, log_dir: Path, port: int | None = None, appendonly: bool = False) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(log_dir),
            "--save", "",
            "--appendonly", "yes" if appendonly else "no",
        ]  # fmt: skip
        super().__init__(f"redis-{self.port}", argv, os.environ, log_dir)
        self.stopped_unless(lambda: wait_until(self.ping, f"redis-server on port {self.port}"))

    def db_url(self, db: int) -> str:
        """The URL of database `db` on this server: a broker and backend of its own,
        so that no other test's worker takes its tasks."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        """A synchronous client for checks and test set-up."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def ping(self) -> bool:
        """True when the server answers PING."""
        if not self.alive():
            raise StackError(f"redis-server exited early:\n{self.log_text()[-3000:]}")
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False


def purge_queue(client: redis.Redis, queue: str) -> None:
    """Drop every message waiting in `queue` (each of its priority lists) and the
    gateway's in-flight copies of them, so that its reclaimer does not queue them again
    (what `taskgate-purge` does, with the default transport options)."""
    purge(client, KeyRules(), InflightKeys(), [queue])


def celery_env(broker_url: str, backend_url: str, **extra: str) -> dict[str, str]:
    """The environment for a worker or gateway using these broker and backend URLs."""
    env = dict(os.environ)
    env.update(CELERY_BROKER_URL=broker_url, CELERY_RESULT_BACKEND=backend_url, **extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def with_config_module(
    env: Mapping[str, str], directory: Path, module: str, body: str
) -> dict[str, str]:
    """`env` that loads `body`, written to `directory` as module `module`, as the
    Celery configuration module (CELERY_CONFIG_MODULE), the repository still importable."""
    (directory / f"{module}.py").write_text(textwrap.dedent(body))
    path = os.pathsep.join([str(directory), str(REPO_ROOT)])
    return {**env, "CELERY_CONFIG_MODULE": module, "PYTHONPATH": path}


def start_worker(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    queues: str | None = None,
    concurrency: int = 2,
    name: str | None = None,
    run_on: Sequence[str] = (),
) -> ManagedProcess:
    """Start `celery -A taskgate.worker worker` and wait until it says it is ready.

    `run_on` prefixes the command, to run it on another host (`ip netns exec NAME`).
    """
    name = name or f"worker-{uuid.uuid4().hex[:8]}"
    argv = [
        sys.executable, "-m", "celery", "-A", "taskgate.worker", "worker",
        "--loglevel=INFO", f"--concurrency={concurrency}", f"--hostname={name}@%h",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    if queues:
        argv.append(f"--queues={queues}")
    process = ManagedProcess(name, [*run_on, *argv], env, log_dir)
    process.started(re.compile(rf"{re.escape(name)}@\S+ ready\."))
    return process


class Gateway(ManagedProcess):
    """`python -m taskgate.server` on a free loopback port; `address` is where it listens, and
    `metrics_url` where it serves `/metrics` (None when off).

    `run_on` prefixes the command, to run it on another host (`ip netns exec NAME`).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        listen: str = "127.0.0.1:0",
        metrics_listen: str = "127.0.0.1:0",
        run_on: Sequence[str] = (),
    ) -> None:
        # A free port by default: many gateways run at once in the tests. `env` wins.
        env = {"TASKGATE_METRICS_LISTEN": metrics_listen, **env, "TASKGATE_LISTEN": listen}
        argv = [*run_on, sys.executable, "-m", "taskgate.server"]
        super().__init__(f"gateway-{uuid.uuid4().hex[:8]}", argv, env, log_dir)
        match = self.started(_GATEWAY_READY)
        self.address = f"{match.group(1)}:{match.group(2)}"
        metrics = _METRICS_AT.search(self.log_text())
        self.metrics_url = metrics.group(1) if metrics else None
