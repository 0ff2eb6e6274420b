"""Builds and runs the Go and Node clients of `examples/`, generated from `proto/`.

A missing toolchain skips the client's tests with the command that installs it, or
fails them when TASKGATE_REQUIRE_CLIENTS=1 (set by `.ci/run`), so CI cannot pass
without them.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from scripts.stack import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
# Debian's golang-*-dev packages install their Go sources here, for GOPATH mode.
DEBIAN_GOPATH = Path("/usr/share/gocode")
# registry.go: github.com/golang/protobuf 1.5 (on APIv2); grpc-go's codec with 1.3
# panics on the stubs protoc-gen-go generates today.
GO_LIBRARIES = (
    "google.golang.org/grpc",
    "google.golang.org/protobuf",
    "google.golang.org/genproto",
    "github.com/golang/protobuf/proto/registry.go",
)
GO_PACKAGES = (
    "golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-google-genproto-dev "
    "golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc"
)
RUN_TIMEOUT = 120.0

Step = dict[str, Any]


def unavailable(reason: str) -> NoReturn:
    """Skip for want of a toolchain; fail instead where CI requires the clients."""
    if os.environ.get("TASKGATE_REQUIRE_CLIENTS") == "1":
        pytest.fail(f"TASKGATE_REQUIRE_CLIENTS=1 but {reason}")
    pytest.skip(reason)


def node_command() -> list[str]:
    """The Node client's command line, its npm dependencies installed."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (Debian: apt-get install nodejs npm)")
    if not (EXAMPLES / "node" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        unavailable("examples/node has no node_modules (run: npm ci --prefix examples/node)")
    return [node, str(EXAMPLES / "node" / "client.js")]


def build_go_client(gopath: Path) -> list[str]:
    """Generate the Go stubs into `gopath` and build the Go client; its command line."""
    tools = [shutil.which(name) for name in ("go", "protoc-gen-go", "protoc-gen-go-grpc")]
    libraries = [DEBIAN_GOPATH / "src" / name for name in GO_LIBRARIES]
    if None in tools or not all(path.exists() for path in libraries):
        unavailable(f"the Go toolchain is incomplete (Debian: apt-get install {GO_PACKAGES})")
    go, protoc_gen_go, protoc_gen_go_grpc = (str(tool) for tool in tools)
    sources = gopath / "src"
    sources.mkdir(parents=True, exist_ok=True)
    _run(
        sys.executable, "-m", "grpc_tools.protoc", "-Iproto",
        f"--plugin=protoc-gen-go={protoc_gen_go}",
        f"--plugin=protoc-gen-go-grpc={protoc_gen_go_grpc}",
        f"--go_out={sources}", f"--go-grpc_out={sources}",
        "taskgate/v1/task_service.proto",
        cwd=REPO_ROOT,
    )  # fmt: skip
    binary = gopath / "bin" / "taskgate-example"
    # GOPATH mode: Debian's packages resolve offline, module mode would fetch them.
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{DEBIAN_GOPATH}"}
    _run(go, "build", "-o", str(binary), ".", cwd=EXAMPLES / "go", env=env)
    return [str(binary)]


def run_client(command: list[str], address: str) -> dict[str, Step]:
    """Run a client against `address`; the JSON line it printed for each step, by step."""
    output = _run(*command, address, cwd=REPO_ROOT)
    steps = [json.loads(line) for line in output.splitlines()]
    return {step.pop("step"): step for step in steps}


def _run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout
