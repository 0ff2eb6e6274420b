"""`make run`: a private redis-server, one worker and the gateway, until Ctrl-C.

Set CELERY_BROKER_URL and CELERY_RESULT_BACKEND to use your own broker and
backend instead of the private redis-server; TASKGATE_LISTEN changes where the
gateway listens (127.0.0.1:50051), TASKGATE_RUN_DIR where the logs go (.run/).
"""

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from scripts import stack
from scripts.stack import REPO_ROOT, ManagedProcess, RedisServer

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"  # the gateway's own default; TASKGATE_METRICS_LISTEN wins


def _python() -> str:
    """How to run this Python from the repository root, for the hint printed at start."""
    executable = Path(sys.executable)
    return (
        str(executable.relative_to(REPO_ROOT)) if executable.is_relative_to(REPO_ROOT) else "python"
    )


def _greeting(
    address: str, metrics_url: str | None, log_dir: Path, redis: RedisServer | None
) -> str:
    client = _python() + " examples/submit.py"
    command = str(Path(_python()).with_name("taskgate")) + " submit tasks.add 2 3 --wait"
    if address != DEFAULT_LISTEN:
        client = f"TASKGATE_ADDRESS={address} {client}"
        command = f"TASKGATE_ADDRESS={address} {command}"
    request = '{"task": "tasks.add", "args_json": "[2, 3]"}'
    store = (
        f"a private redis-server at {redis.url}" if redis else "your CELERY_* broker and backend"
    )
    return (
        f"\ntaskgate is ready: gRPC on {address}, one worker, using {store}.\n"
        f"Metrics: {metrics_url or 'off (TASKGATE_METRICS_LISTEN is empty)'}\n"
        f"Logs: {log_dir}/\n"
        "Try it:\n"
        f"  grpcurl -plaintext -d '{request}' {address} taskgate.v1.TaskService/Submit\n"
        f"  {client}\n"
        f"  {command}\n"
        "Press Ctrl-C to stop.\n"
    )


def _start(pieces: list[ManagedProcess], log_dir: Path) -> str:
    """Start redis (unless configured), a worker and the gateway; append each to `pieces`."""
    broker = os.environ.get("CELERY_BROKER_URL")
    backend = os.environ.get("CELERY_RESULT_BACKEND")
    # Never fall back to a machine-wide Redis: whatever is not configured is private.
    redis = None if broker and backend else RedisServer(log_dir)
    if redis:
        pieces.append(redis)
    private = redis.url if redis else ""
    env = stack.celery_env(broker or private, backend or private)
    pieces.append(stack.start_worker(env, log_dir, name="worker"))
    gateway = stack.Gateway(
        env,
        log_dir,
        listen=os.environ.get("TASKGATE_LISTEN") or DEFAULT_LISTEN,
        metrics_listen=DEFAULT_METRICS_LISTEN,
    )
    pieces.append(gateway)
    return _greeting(gateway.address, gateway.metrics_url, log_dir, redis)


def _stop(pieces: list[ManagedProcess]) -> None:
    """Stop the gateway first, then the worker, then redis: the reverse of the start."""
    for piece in reversed(pieces):
        piece.stop()


def _watch(pieces: list[ManagedProcess], stop_signals: list[int]) -> int:
    """Wait for SIGINT or SIGTERM (0) or for a piece to die (1, with the end of its log)."""
    while not stop_signals:
        dead = [piece for piece in pieces if not piece.alive()]
        if dead and not stop_signals:
            piece = dead[0]
            print(
                f"taskgate: {piece.name} stopped unexpectedly (exit code {piece.popen.returncode});"
                f" the end of {piece.log_path}:\n{piece.log_text()[-3000:]}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.2)  # Polling: a signal's handler runs during the sleep.
    return 0


def main() -> int:
    """Run the stack until SIGINT or SIGTERM (exit 0) or until a piece dies (exit 1)."""
    stop_signals: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_signals.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    log_dir = Path(os.environ.get("TASKGATE_RUN_DIR") or REPO_ROOT / ".run")
    log_dir = log_dir.resolve() / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    pieces: list[ManagedProcess] = []
    try:
        # The children start with SIGINT blocked, so a Ctrl-C in the terminal (sent to
        # the whole process group) reaches only this script, which stops them in order.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            greeting = _start(pieces, log_dir)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        print(greeting, flush=True)
        return _watch(pieces, stop_signals)
    except stack.StackError as exc:
        print(f"taskgate: {exc}\nLogs: {log_dir}/", file=sys.stderr)
        return 1
    finally:
        if pieces:
            names = ", ".join(piece.name for piece in reversed(pieces))
            print(f"taskgate: stopping {names}.", flush=True)
        _stop(pieces)


if __name__ == "__main__":
    sys.exit(main())
