"""The private stack the benchmark runs on: redis-server, one worker, the gateway, Flower,
and the empty-handler ceiling (`bench.ceiling`).

The first four come from `scripts.stack`, as in the tests; Flower is started
the way its documentation shows, on a free loopback port.
"""

import contextlib
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType

from bench.ceiling import start_ceiling
from bench.cpu import process_seconds, tree_seconds
from bench.settings import BenchSettings
from scripts.stack import (
    Gateway,
    ManagedProcess,
    RedisServer,
    StackError,
    celery_env,
    free_port,
    purge_queue,
    start_worker,
    wait_until,
)

SHARED_REDIS_PORT = 6379
_FLOWER_LISTENING = re.compile(r"Visit me at http://127\.0\.0\.1:(\d+)")


def start_flower(env: dict[str, str], log_dir: Path) -> tuple[ManagedProcess, int]:
    """`celery -A taskgate.worker flower` on a free loopback port, its API open without auth.

    Flower 2.x answers 401 on every API call unless FLOWER_UNAUTHENTICATED_API is
    set (or auth is configured). Events are off: with them on, Flower switches the
    worker's task events on every 5 s, which would slow the worker for every
    front end, and none of the endpoints measured here reads them.
    """
    port = free_port()
    argv = [
        sys.executable, "-m", "celery", "-A", "taskgate.worker", "flower",
        f"--port={port}", "--address=127.0.0.1", "--enable_events=False",
    ]  # fmt: skip
    flower_env = {**env, "FLOWER_UNAUTHENTICATED_API": "true"}
    process = ManagedProcess(f"flower-{port}", argv, flower_env, log_dir)
    process.started(_FLOWER_LISTENING)
    process.stopped_unless(
        lambda: wait_until(lambda: _flower_api_answers(port), f"Flower's API on port {port}")
    )
    return process, port


def _flower_api_answers(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/api/task/result/{uuid.uuid4()}"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError as exc:
        raise StackError(f"Flower's API answered {exc.code}: {exc.read()[:200]!r}") from exc
    except OSError:
        return False


def redis_server_version() -> str:
    """`redis-server --version`, shortened to its version number."""
    text = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"v=(\S+)", text)
    return match.group(1) if match else text.strip() or "unknown"


class BenchStack:
    """Starts everything on entry and stops everything on exit, whatever happened."""

    def __init__(self, settings: BenchSettings, log_dir: Path) -> None:
        self._settings = settings
        self._log_dir = log_dir
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> "BenchStack":
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def _start(self) -> None:
        self.redis = RedisServer(self._log_dir)
        self._exit.callback(self.redis.stop)
        if self.redis.port == SHARED_REDIS_PORT:
            raise StackError("refusing to benchmark on port 6379, the machine's shared Redis")
        self.url = self.redis.url
        env = celery_env(self.url, self.url)
        self.worker = start_worker(
            env, self._log_dir, concurrency=self._settings.worker_concurrency
        )
        self._exit.callback(self.worker.stop)
        self.gateway = Gateway(env, self._log_dir)
        self._exit.callback(self.gateway.stop)
        self.flower, self.flower_port = start_flower(env, self._log_dir)
        self._exit.callback(self.flower.stop)
        self.ceiling, self.ceiling_address = start_ceiling(env, self._log_dir)
        self._exit.callback(self.ceiling.stop)

    def processes(self) -> list[ManagedProcess]:
        """Everything started, for checks that nothing died mid-run."""
        return [self.redis, self.worker, self.gateway, self.flower, self.ceiling]

    def purge(self, queue: str) -> None:
        """Drop every message waiting in `queue`, in each of its priority lists."""
        with self.redis.client() as client:
            purge_queue(client, queue)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by this process (all clients) and by each service."""
        return {
            "client": time.process_time(),
            "gateway": tree_seconds(self.gateway.popen.pid),
            "Flower": process_seconds(self.flower.popen.pid),
            "worker": tree_seconds(self.worker.popen.pid),
            "redis": process_seconds(self.redis.popen.pid),
        }

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._exit.close()
