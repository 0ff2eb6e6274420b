"""The deployment files and `make run`, proved without Docker.

No Docker engine runs on the development and CI machines, so the compose file's
worker and gateway commands, environment and health check run here as local
processes against a private redis-server: the same commands the containers run.
"""

import contextlib
import functools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration

from scripts.stack import REPO_ROOT, ManagedProcess, RedisServer, StackError, free_port, wait_until
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc

GATEWAY_COMMAND = ["python", "-m", "server"]
WORKER_COMMAND = ["celery", "-A", "worker", "worker", "--loglevel=INFO"]
COMPOSE_REDIS = "redis:6379"
HEALTH_ADDRESS = "127.0.0.1:50051"
LOCAL_PROGRAMS = {"python": [sys.executable], "celery": [sys.executable, "-m", "celery"]}


@functools.cache
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    parsed: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return parsed


def service(name: str) -> dict[str, Any]:
    """One service of the compose file."""
    found: dict[str, Any] = compose()["services"][name]
    return found


def environment(name: str) -> dict[str, str]:
    """A service's environment, whether the compose file writes it as a mapping or a list."""
    raw = service(name).get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


def command(value: str | list[str]) -> list[str]:
    """A compose command in exec form."""
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def local_argv(argv: list[str]) -> list[str]:
    """A container's command run with this virtualenv's Python."""
    return [*LOCAL_PROGRAMS[argv[0]], *argv[1:]]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def add_2_and_3(address: str) -> str:
    """Submit tasks.add(2, 3) through the gateway and wait up to 10 s for its result."""
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        submitted = stub.Submit(pb.SubmitRequest(task="tasks.add", args_json="[2, 3]"), timeout=10)
        request = pb.GetResultRequest(task_id=submitted.task_id, wait=Duration(seconds=10))
        result = stub.GetResult(request, timeout=15)
    assert result.ready, pb.TaskState.Name(result.state)
    return result.result_json


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, standing in for the compose `redis` service."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_dockerfile_installs_the_project_and_runs_the_gateway_as_non_root() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copied: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "COPY":
            *sources, destination = arguments.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file to build from"
                copied[source] = destination.rstrip("/")
    installs = [
        match.group(1)
        for keyword, arguments in instructions
        if keyword == "RUN" and (match := re.search(r"pip install (?:-\S+ )*(\S+)", arguments))
    ]
    assert installs, "the Dockerfile never runs pip install"
    project = installs[0].rstrip("/")
    assert copied["pyproject.toml"] == project
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert copied.get(package) == f"{project}/{package}", f"{package}/ is not in the image"
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1] not in ("root", "0")
    cmd = [json.loads(arguments) for keyword, arguments in instructions if keyword == "CMD"]
    assert cmd[-1] == GATEWAY_COMMAND == command(service("gateway")["command"])


def test_compose_declares_redis_a_worker_and_the_gateway() -> None:
    redis = service("redis")
    assert redis["image"].startswith("redis:7")
    assert "--appendonly yes" in " ".join(command(redis["command"]))
    for name in ("worker", "gateway"):
        assert service(name)["build"] == "."
        assert environment(name)["CELERY_BROKER_URL"] == f"redis://{COMPOSE_REDIS}/0"
        assert environment(name)["CELERY_RESULT_BACKEND"] == f"redis://{COMPOSE_REDIS}/0"
        assert "redis" in service(name)["depends_on"]
    assert command(service("worker")["command"]) == WORKER_COMMAND
    gateway = service("gateway")
    assert environment("gateway")["TASKGATE_LISTEN"] == "0.0.0.0:50051"
    assert "50051:50051" in [str(port) for port in gateway["ports"]]
    assert gateway["healthcheck"]["test"][0] == "CMD"
    assert HEALTH_ADDRESS in " ".join(gateway["healthcheck"]["test"])


def clean_env() -> dict[str, str]:
    """This environment without the Celery and taskgate settings of whoever runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "TASKGATE_"))}


def start_service(name: str, redis: RedisServer, log_dir: Path) -> ManagedProcess:
    """Run a compose service's command and environment here, against `redis`."""
    env = clean_env()
    for key, value in environment(name).items():
        env[key] = value.replace(COMPOSE_REDIS, f"127.0.0.1:{redis.port}")
    if "TASKGATE_LISTEN" in env:
        env["TASKGATE_LISTEN"] = "127.0.0.1:0"
        env["TASKGATE_METRICS_LISTEN"] = "127.0.0.1:0"  # other gateways may hold 9464
    env["PYTHONUNBUFFERED"] = "1"  # As the Dockerfile sets it.
    argv = local_argv(command(service(name)["command"]))
    return ManagedProcess(f"compose-{name}", argv, env, log_dir)


def healthcheck(address: str) -> subprocess.CompletedProcess[str]:
    """The gateway's compose health check, pointed at `address`."""
    test = [str(part) for part in service("gateway")["healthcheck"]["test"]]
    argv = local_argv([part.replace(HEALTH_ADDRESS, address) for part in test[1:]])
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_compose_worker_and_gateway_run_a_task(private_redis: RedisServer, tmp_path: Path) -> None:
    started: list[ManagedProcess] = []
    try:
        worker = start_service("worker", private_redis, tmp_path)
        started.append(worker)
        worker.wait_for_log(re.compile(r"@\S+ ready\."))
        gateway = start_service("gateway", private_redis, tmp_path)
        started.append(gateway)
        ready = gateway.wait_for_log(re.compile(r"taskgate listening on (\S+):(\d+)"))
        address = f"{ready.group(1)}:{ready.group(2)}"

        assert add_2_and_3(address) == "5"
        healthy = healthcheck(address)
        assert healthy.returncode == 0, healthy.stderr
        assert healthcheck(f"127.0.0.1:{free_port()}").returncode != 0

        # `docker compose stop` sends SIGTERM: both must shut down cleanly.
        assert [process.stop() for process in reversed(started)] == [0, 0]
    finally:
        for process in reversed(started):
            process.stop()


def test_make_run_serves_until_ctrl_c(tmp_path: Path) -> None:
    env = clean_env()
    env.update(
        TASKGATE_LISTEN="127.0.0.1:0",
        TASKGATE_METRICS_LISTEN="127.0.0.1:0",  # the default, 9464, may be held by another
        TASKGATE_RUN_DIR=str(tmp_path),
    )
    output = tmp_path / "make-run.out"
    with output.open("wb") as sink:
        # A session of its own, so the Ctrl-C below reaches its whole process group,
        # as a terminal's does, and nothing it started can hide from the final check.
        run = subprocess.Popen(
            [sys.executable, "-m", "scripts.run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def greeted() -> bool:
            if run.poll() is not None:
                raise StackError(f"scripts.run exited {run.returncode}:\n{output.read_text()}")
            return "Press Ctrl-C to stop" in output.read_text()

        wait_until(greeted, "make run", timeout=90)
        greeting = output.read_text()
        address = re.search(r"gRPC on (\S+:\d+)", greeting)
        assert address, greeting
        assert "redis://127.0.0.1:" in greeting
        assert ":6379/" not in greeting
        assert add_2_and_3(address.group(1)) == "5"
        metrics = re.search(r"Metrics: (http://127\.0\.0\.1:\d+/metrics)", greeting)
        assert metrics, greeting
        with urllib.request.urlopen(metrics.group(1), timeout=5) as scraped:
            assert b"grpc_server_handled_total{" in scraped.read()

        os.killpg(run.pid, signal.SIGINT)
        assert run.wait(timeout=20) == 0, output.read_text()
        with pytest.raises(ProcessLookupError):
            os.killpg(run.pid, 0)  # Nothing of its group is left: redis, worker, gateway.
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()


def test_make_run_without_redis_server_says_how_to_install_it(tmp_path: Path) -> None:
    env = clean_env()
    env.update(PATH=str(Path(sys.executable).parent), TASKGATE_RUN_DIR=str(tmp_path))
    run = subprocess.run(
        [sys.executable, "-m", "scripts.run"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "apt-get install redis-server" in run.stderr
