"""Compose files read as Compose reads them, and their services run here as processes.

No Docker engine runs on the development and CI machines, so a service's command,
environment and health check run as local processes, with the image's ENV (from the
Dockerfile), the compose network's names and the containers' paths mapped onto this
machine (`Host`), and `${VARIABLES}` interpolated as Compose does.
"""

import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf.duration_pb2 import Duration

from scripts.stack import REPO_ROOT, ManagedProcess
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc
from tests.image_helpers import clean_env, stages

COMPOSE_REDIS = "redis:6379"
HEALTH_ADDRESS = "127.0.0.1:50051"
WORKER_READY = re.compile(r"@\S+ ready\.")
GATEWAY_READY = re.compile(r"taskgate listening on (\S+):(\d+)")
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::([?-])([^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """`value` with `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$` as Compose reads it."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if name is None:
            return "$"
        if variables.get(name):
            return variables[name]
        if kind == "?":
            raise ValueError(f"compose refuses to start: {name}: {rest}")
        return rest if kind == "-" else ""

    return _VARIABLE.sub(one, value)


def _interpolated(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolated(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(item, variables) for key, item in node.items()}
    return node


class ComposeFile:
    """A compose file with its variables (Compose's `.env`) filled in."""

    def __init__(self, name: str, variables: Mapping[str, str] | None = None) -> None:
        self.path = REPO_ROOT / name
        self.raw: dict[str, Any] = yaml.safe_load(self.path.read_text())
        self.data: dict[str, Any] = _interpolated(self.raw, variables or {})

    def service(self, name: str) -> dict[str, Any]:
        """One service, interpolated."""
        found: dict[str, Any] = self.data["services"][name]
        return found

    def environment(self, name: str) -> dict[str, str]:
        """A service's environment, whether written as a mapping or a list."""
        raw = self.service(name).get("environment", {})
        if isinstance(raw, list):
            return dict(item.split("=", 1) for item in raw)
        return {key: str(value) for key, value in raw.items()}

    def command(self, name: str) -> list[str]:
        """A service's command in exec form."""
        return command(self.service(name)["command"])

    def healthcheck(self, name: str) -> list[str]:
        """A service's health check as argv: CMD as it is, CMD-SHELL through `sh -c`."""
        kind, *rest = [str(part) for part in self.service(name)["healthcheck"]["test"]]
        assert kind in ("CMD", "CMD-SHELL"), kind
        return rest if kind == "CMD" else ["sh", "-c", rest[0]]

    def secret_file(self, name: str) -> Path:
        """Where on the host a secret is read from, relative to the compose file."""
        return self.path.parent / str(self.data["secrets"][name]["file"])


def command(value: str | list[str]) -> list[str]:
    """A compose command in exec form."""
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


@dataclass
class Host:
    """This machine standing in for a container: where its names and paths lead here."""

    redis_port: int
    paths: dict[str, Path] = field(default_factory=dict)
    python: Path = Path(sys.executable)

    def localize(self, value: str) -> str:
        """`value` with the compose network's names and the container's paths made local."""
        value = value.replace(COMPOSE_REDIS, f"127.0.0.1:{self.redis_port}")
        for container_path, local in sorted(self.paths.items(), key=lambda kv: -len(kv[0])):
            value = value.replace(container_path, str(local))
        return value

    def argv(self, argv: list[str]) -> list[str]:
        """A container's command run with this host's Python."""
        programs = {"python": [str(self.python)], "celery": [str(self.python), "-m", "celery"]}
        first = argv[0]
        return [*programs.get(first, [first]), *[self.localize(part) for part in argv[1:]]]

    def env(self, service_env: Mapping[str, str]) -> dict[str, str]:
        """The image's ENV and the service's environment, listen addresses made local."""
        env = clean_env(stages()[-1].env(), self.python.parent.parent)
        env["HOSTNAME"] = socket.gethostname()  # As Docker sets it in every container.
        for key, value in service_env.items():
            env[key] = self.localize(value)
            if value.startswith("0.0.0.0:"):
                env[key] = "127.0.0.1:0"  # gRPC and metrics: ports of this test's own.
        return env

    def start(self, compose: ComposeFile, name: str, log_dir: Path) -> ManagedProcess:
        """Run a service's command and environment here."""
        argv = self.argv(compose.command(name))
        env = self.env(compose.environment(name))
        return ManagedProcess(
            f"{compose.path.stem}-{name}", argv, env, log_dir, cwd=self.workdir(compose, name)
        )

    def workdir(self, compose: ComposeFile, name: str) -> Path:
        """Where a service's processes run here: its working_dir, else the image's WORKDIR
        (a service of another image, Redis, runs nothing that reads its directory)."""
        service = compose.service(name)
        if "build" not in service:
            return REPO_ROOT
        return self.paths[service.get("working_dir") or stages()[-1].workdir()]

    def check(
        self, compose: ComposeFile, name: str, address: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run a service's health check here, in that service's environment."""
        argv = self.argv(compose.healthcheck(name))
        if address:
            argv = [part.replace(HEALTH_ADDRESS, address) for part in argv]
        # The Redis container's own localhost:6379 is this test's redis port here.
        local_cli = f"redis-cli -p {self.redis_port}"
        argv = [part.replace("redis-cli", local_cli) for part in argv]
        return subprocess.run(
            argv,
            env=self.env(compose.environment(name)),
            cwd=self.workdir(compose, name),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def add_2_and_3(channel: grpc.Channel, token: str = "") -> str:
    """Submit tasks.add(2, 3) through the gateway and wait up to 10 s for its result."""
    metadata: tuple[tuple[str, str | bytes], ...] = (
        (("authorization", f"Bearer {token}"),) if token else ()
    )
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    request = pb.SubmitRequest(task="tasks.add", args_json="[2, 3]")
    submitted = stub.Submit(request, timeout=10, metadata=metadata)
    wait = pb.GetResultRequest(task_id=submitted.task_id, wait=Duration(seconds=10))
    result = stub.GetResult(wait, timeout=15, metadata=metadata)
    assert result.ready, pb.TaskState.Name(result.state)
    return result.result_json
