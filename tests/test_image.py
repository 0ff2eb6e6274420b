"""The image, proved without a Docker engine: the Dockerfile as written, the lock file
fresh, and the Dockerfile's own install commands run into a fresh virtualenv, from which
a gateway and a worker start and run a task (tests/image_helpers.py)."""

import difflib
import functools
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.stack import REPO_ROOT, ManagedProcess, RedisServer
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc
from tests.compose_helpers import GATEWAY_READY, WORKER_READY, ComposeFile, Host, add_2_and_3
from tests.image_helpers import Emulation, Stage, split_mounts, stages

LOCK = REPO_ROOT / "requirements" / "runtime.lock"
PRODUCTION = "docker-compose.yml"
EXAMPLE = REPO_ROOT / "examples" / "worker-image"
FULL_PYTHON_TAG = re.compile(r"python:(3\.11\.\d+)-(slim-)?(\w+)$")


def runtime() -> Stage:
    """The stage the image is: the last one."""
    return stages()[-1]


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a lock file or of `pip freeze`, names normalized."""
    found = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


def test_the_image_is_built_in_two_stages_from_one_python() -> None:
    build, image = stages()[0], runtime()
    assert len(stages()) == 2
    built, ran = FULL_PYTHON_TAG.match(build.base), FULL_PYTHON_TAG.match(image.base)
    assert built, f"{build.base}: not a full python:3.11.N tag"
    assert ran, f"{image.base}: not a full python:3.11.N tag"
    # Wheels built against the same Python and Debian release as the one they run on.
    assert (built[1], built[3]) == (ran[1], ran[3])
    assert ran[2] == "slim-", "the runtime stage is not the slim image"
    installs = [split_mounts(arguments)[1] for arguments in image.arguments("RUN")]
    pip_installs = [command for command in installs if "pip install" in command]
    assert pip_installs
    for command in pip_installs:
        for step in command.split("&&"):
            assert "--no-index" in step, f"the runtime stage installs from an index: {step}"
    assert "--require-hashes -r /runtime.lock" in " ".join(pip_installs)


def test_the_image_runs_the_gateway_as_non_root_without_a_healthcheck() -> None:
    image = runtime()
    env = image.env()
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert image.arguments("USER"), "the image runs as root"
    assert image.arguments("USER")[-1] not in ("root", "0")
    assert not any(stage.arguments("HEALTHCHECK") for stage in stages())
    assert image.cmd() == ["python", "-m", "taskgate.server"]
    copied = {arguments.split()[0] for arguments in stages()[0].arguments("COPY")}
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"{pattern} is not built into the image"


def test_the_lock_is_what_make_lock_writes_now(tmp_path: Path) -> None:
    regenerated = tmp_path / "runtime.lock"
    shutil.copy(LOCK, regenerated)  # Its pins are uv's preferences, as for `make lock`.
    uv = Path(sys.executable).parent / "uv"
    make = ["make", "--no-print-directory", "--assume-old=.venv/.installed", "lock"]
    subprocess.run(
        [*make, f"LOCK_FILE={regenerated}", f"UV={uv}"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    # Hash lines aside: a wheel uploaded later for a pinned version adds one, and the
    # pins, markers and `via` lines are what a pyproject change without `make lock` moves.
    stale = list(
        difflib.unified_diff(without_hashes(LOCK), without_hashes(regenerated), lineterm="")
    )
    assert not stale, "requirements/runtime.lock is stale: run `make lock`\n" + "\n".join(
        stale[:40]
    )


def without_hashes(lock: Path) -> list[str]:
    """A lock file's lines but its `--hash` ones."""
    return [line for line in lock.read_text().splitlines() if not line.strip().startswith("--hash")]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's stages run here; the image's Python is `venv`."""
    root = tmp_path_factory.mktemp("image")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    Emulation(root, root / "venv").run_all()
    return root


def test_the_image_installs_exactly_the_locked_versions(image_root: Path) -> None:
    python = image_root / "venv" / "bin" / "python"
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    assert pins(frozen) == pins(LOCK.read_text())
    assert "taskgate @ file:" in frozen
    checked = subprocess.run(
        [python, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout


def install_example_worker(home: Path) -> dict[str, str]:
    """examples/worker-image/Dockerfile's COPY into the image's home; its ENV."""
    example = stages(EXAMPLE / "Dockerfile")[-1]
    assert example.base == "taskgate"
    for arguments in example.arguments("COPY"):
        source, destination = arguments.split()
        shutil.copytree(EXAMPLE / source, home / destination)
    assert example.env()["PYTHONPATH"] == runtime().workdir()
    return {**example.env(), "PYTHONPATH": str(home)}


def test_a_gateway_and_workers_from_the_image_run_tasks(image_root: Path) -> None:
    home = image_root / "home"
    home.mkdir()
    host = Host(0, {runtime().workdir(): home}, python=image_root / "venv" / "bin" / "python")
    imported = subprocess.run(
        [host.python, "-c", "import taskgate.server as s, taskgate.worker as w; print(s, w)"],
        cwd=home,
        env=host.env({}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert imported.count(str(image_root / "venv")) == 2, imported  # Not the checkout.
    redis = RedisServer(image_root)
    env = host.env(
        {
            "CELERY_BROKER_URL": redis.url,
            "CELERY_RESULT_BACKEND": redis.url,
            "TASKGATE_LISTEN": "0.0.0.0:50051",
            "TASKGATE_METRICS_LISTEN": "0.0.0.0:9464",
        }
    )
    worker = host.argv(ComposeFile(PRODUCTION, {"REDIS_PASSWORD": "-"}).command("worker"))
    gateway_env = {**env, "TASKGATE_TASKS": "tasks.*,billing.*"}
    start = functools.partial(ManagedProcess, log_dir=image_root, cwd=home)
    processes = {
        "worker": start("image-worker", worker, env),
        "gateway": start("image-gateway", host.argv(runtime().cmd()), gateway_env),
    }
    try:
        processes["worker"].wait_for_log(WORKER_READY)
        address = "{}:{}".format(*processes["gateway"].wait_for_log(GATEWAY_READY).groups())
        with grpc.insecure_channel(address) as channel:
            assert add_2_and_3(channel) == "5"
            # The example's worker alone, so that no worker without its tasks takes them.
            assert processes["worker"].stop() == 0
            example_env = {**env, **install_example_worker(home)}
            processes["example"] = start("example-worker", worker, example_env)
            processes["example"].wait_for_log(WORKER_READY)
            assert invoice_total(channel, [250, 125]) == "375"
    finally:
        for process in processes.values():
            process.stop()
        redis.stop()


def invoice_total(channel: grpc.Channel, amounts: list[int]) -> str:
    """Execute the example worker image's billing.invoice_total; its result."""
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    submit = pb.SubmitRequest(task="billing.invoice_total", args_json=json.dumps([amounts]))
    request = pb.ExecuteRequest(submit=submit, wait=Duration(seconds=10))
    reply = stub.Execute(request, timeout=15)
    assert reply.ready, pb.TaskState.Name(reply.state)
    return reply.result_json
