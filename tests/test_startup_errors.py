"""Configuration mistakes stop the gateway and the worker at start: exit status 1 and one
line naming the setting, the value and what is expected, never a traceback."""

import json
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from scripts.stack import REPO_ROOT, Gateway, free_port
from taskgate.server.auth import digest

ERROR_PREFIX = "configuration error: "


def _run(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` in the repository; it must exit on its own within 30 s."""
    return subprocess.run(
        argv, env=dict(env), cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False
    )


def assert_one_line_error(finished: subprocess.CompletedProcess[str], *named: str) -> None:
    """Exit status 1, no traceback, and a last line that names everything in `named`."""
    assert finished.returncode == 1, finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr
    last = finished.stderr.strip().splitlines()[-1]
    assert ERROR_PREFIX in last, finished.stderr
    for text in named:
        assert text in last, last
    assert "listening" not in finished.stderr


@pytest.fixture
def tokens_path(tmp_path: Path) -> Path:
    return tmp_path / "tokens.json"


GOOD_DIGEST = digest("a-token").hex()

TOKENS_FILES = {
    "bad JSON": ('{"tokens": [', ("is not JSON",)),
    "an empty list": ('{"tokens": []}', ("lists no tokens", "expected at least one")),
    "no sha256": ('{"tokens": [{"name": "billing"}]}', ("billing", "sha256=None", "64 hex")),
    "a non-hex digest": (
        '{"tokens": [{"name": "billing", "sha256": "' + "zz" * 32 + '"}]}',
        ("sha256='zzzz", "64 hex"),
    ),
    "a short digest": ('{"tokens": [{"name": "b", "sha256": "abcd"}]}', ("'abcd'", "64 hex")),
    "no tokens key": (json.dumps([{"name": "b", "sha256": GOOD_DIGEST}]), ("'tokens' list",)),
}


@pytest.mark.parametrize("case", sorted(TOKENS_FILES))
def test_a_tokens_file_that_cannot_be_used_stops_the_gateway(
    stack_env: dict[str, str], tokens_path: Path, case: str
) -> None:
    body, named = TOKENS_FILES[case]
    tokens_path.write_text(body)
    env = {**stack_env, "TASKGATE_LISTEN": "127.0.0.1:0", "TASKGATE_TOKENS_FILE": str(tokens_path)}
    finished = _run([sys.executable, "-m", "taskgate.server"], env)
    assert_one_line_error(finished, "TASKGATE_TOKENS_FILE", str(tokens_path), *named)


SETTINGS = {
    "TASKGATE_LOG_LEVEL": ("verbose", "DEBUG, INFO"),
    "TASKGATE_LOG_FORMAT": ("xml", "text, json"),
    "TASKGATE_ACCESS_LOG": ("maybe", "on or off"),
    "TASKGATE_TRACING": ("zipkin", "off, otel"),
    "TASKGATE_LISTEN": ("localhost", "host:port"),
    "TASKGATE_MAX_WAIT": ("nan", "a positive number"),
    "TASKGATE_GRACE": ("inf", "a positive number"),
    "TASKGATE_WORKERS_REFRESH": ("30s", "not a number"),
    "CELERY_CONFIG_MODULE": ("celeryconfg", "No module named 'celeryconfg'"),
    "CELERY_BROKER_URL": ("redsi://127.0.0.1:6379/0", "No such transport: redsi"),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_setting_the_gateway_cannot_use_stops_it_with_one_line(
    stack_env: dict[str, str], name: str
) -> None:
    value, expected = SETTINGS[name]
    env = {**stack_env, "TASKGATE_LISTEN": "127.0.0.1:0", name: value}
    finished = _run([sys.executable, "-m", "taskgate.server"], env)
    assert_one_line_error(finished, name, value, expected)


WORKER_COMMANDS = {
    "python -m taskgate.worker": [sys.executable, "-m", "taskgate.worker"],
    "celery -A taskgate.worker worker": [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "taskgate.worker",
        "worker",
    ],
}


@pytest.mark.parametrize("command", sorted(WORKER_COMMANDS))
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TASKGATE_TASK_MODULES", "worker.taks"),
        ("CELERY_CONFIG_MODULE", "celeryconfg"),
        ("TASKGATE_LOG_FORMAT", "xml"),
    ],
)
def test_a_module_typo_stops_the_worker_with_one_line(
    stack_env: dict[str, str], command: str, name: str, value: str
) -> None:
    finished = _run(WORKER_COMMANDS[command], {**stack_env, name: value})
    assert_one_line_error(finished, name, repr(value))


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another server (a plain listening socket) holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_held_by_another_server_stops_the_gateway(
    stack_env: dict[str, str], held_port: int
) -> None:
    address = f"127.0.0.1:{held_port}"
    finished = _run(
        [sys.executable, "-m", "taskgate.server"], {**stack_env, "TASKGATE_LISTEN": address}
    )
    assert_one_line_error(finished, "TASKGATE_LISTEN", address, "Address already in use")


def test_a_second_gateway_on_the_same_port_refuses_to_start(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """gRPC would share the port (SO_REUSEPORT) and split the connections between the two."""
    address = f"127.0.0.1:{free_port()}"
    first = Gateway(stack_env, tmp_path, listen=address)
    try:
        finished = _run(
            [sys.executable, "-m", "taskgate.server"], {**stack_env, "TASKGATE_LISTEN": address}
        )
        assert_one_line_error(finished, "TASKGATE_LISTEN", address, "Address already in use")
        assert first.alive()
    finally:
        first.stop()
