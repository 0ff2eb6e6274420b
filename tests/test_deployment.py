"""The compose files and `make run`, proved without Docker.

No Docker engine runs on the development and CI machines, so each compose service's
command, environment and health check run here as local processes (tests/compose_helpers.py)
against a redis-server started with the compose file's own command: the same commands
the containers run, with the same passwords, tokens and certificates.
"""

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from scripts.stack import REPO_ROOT, ManagedProcess, StackError, free_port, wait_until
from taskgate.server.auth import digest
from tests.compose_helpers import GATEWAY_READY, WORKER_READY, ComposeFile, Host, add_2_and_3
from tests.image_helpers import stages
from tests.tls_helpers import Authority

PRODUCTION = "docker-compose.yml"
DEVELOPMENT = "docker-compose.dev.yml"
WORKER_COMMAND = ["celery", "-A", "taskgate.worker", "worker", "--loglevel=INFO"]
SECRETS = "/run/secrets"
TOKEN = "deploy-test-token"


def clean_env() -> dict[str, str]:
    """This environment without the Celery and taskgate settings of whoever runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "TASKGATE_"))}


class Deployment:
    """A compose file's services started here, one by one, stopped in reverse."""

    def __init__(self, compose: ComposeFile, host: Host, log_dir: Path) -> None:
        self.compose = compose
        self.host = host
        self.log_dir = log_dir
        self.started: list[ManagedProcess] = []

    def start(self, name: str, ready: re.Pattern[str]) -> re.Match[str]:
        """Start service `name`; what matched `ready` in its log once it said it."""
        process = self.host.start(self.compose, name, self.log_dir)
        self.started.append(process)
        return process.wait_for_log(ready)

    def start_gateway(self) -> str:
        """Start the gateway; the address it listens on."""
        return "{}:{}".format(*self.start("gateway", GATEWAY_READY).groups())

    def start_redis(self) -> ManagedProcess:
        """redis-server with the compose command's options, on this test's own port."""
        local = ["--port", str(self.host.redis_port), "--bind", "127.0.0.1"]
        argv = [*self.compose.command("redis"), *local, "--dir", str(self.log_dir)]
        redis = ManagedProcess("compose-redis", argv, clean_env(), self.log_dir)
        self.started.append(redis)
        redis.wait_for_log(re.compile(r"Ready to accept connections"))
        return redis

    def scrape_gateway(self) -> str:
        """The gateway's /metrics, from the address its log names."""
        gateway = next(p for p in self.started if p.name.endswith("-gateway"))
        url = gateway.wait_for_log(re.compile(r"metrics on (http://\S+/metrics)")).group(1)
        with urllib.request.urlopen(url, timeout=5) as scraped:
            text: str = scraped.read().decode()
        return text

    def check(self, name: str, address: str = "") -> subprocess.CompletedProcess[str]:
        """The service's compose health check, run here."""
        return self.host.check(self.compose, name, address)

    def healthy(self, name: str, address: str = "") -> bool:
        """True when the service's compose health check passes here; fails with its output."""
        done = self.check(name, address)
        assert done.returncode in (0, 1, 69), f"{done.args} did not run: {done.stderr}"
        return done.returncode == 0

    def stop(self) -> list[int]:
        """SIGTERM every service, the last started first; their exit codes."""
        return [process.stop() for process in reversed(self.started)]

    def logs(self) -> str:
        """Everything every service has written."""
        return "".join(process.log_text() for process in self.started)


def production_secrets(directory: Path) -> dict[str, str]:
    """Compose's `.env` for the production file, and its secret files in `directory`."""
    compose = ComposeFile(PRODUCTION, {"REDIS_PASSWORD": "x"})
    authority = Authority(directory, "deploy")
    issued = authority.issue("gateway", dns=("gateway",))
    entry = {"name": "deploy", "sha256": digest(TOKEN).hex(), "tasks": ["tasks.*"]}
    files = {
        "tokens.json": json.dumps({"tokens": [entry]}).encode(),
        "gateway.pem": issued.cert_pem(),
        "gateway.key": issued.key_pem(),
        "ca.pem": authority.cert_pem(),
    }
    assert set(files) == set(compose.data["secrets"]), "a secret of the compose file is untested"
    (directory / "secrets").mkdir()
    for name, content in files.items():
        (directory / "secrets" / name).write_bytes(content)
    return {"REDIS_PASSWORD": secrets.token_hex(16)}


def tls_channel(address: str, ca: Path) -> grpc.Channel:
    """A TLS channel trusting `ca`, checking the certificate's name `gateway`."""
    credentials = grpc.ssl_channel_credentials(ca.read_bytes())
    options = [("grpc.ssl_target_name_override", "gateway")]
    return grpc.secure_channel(address, credentials, options)


def test_compose_files_start_what_the_image_runs() -> None:
    image = stages()[-1]
    for name in (PRODUCTION, DEVELOPMENT):
        compose = ComposeFile(name, {"REDIS_PASSWORD": "pw"})
        assert compose.service("redis")["image"].startswith("redis:7")
        assert compose.command("gateway") == image.cmd()
        assert compose.command("worker") == WORKER_COMMAND
        for service in compose.data["services"]:
            assert "test" in compose.service(service)["healthcheck"], f"{name}: {service}"
        for service in ("worker", "gateway"):
            assert compose.service(service)["build"] == "."
            assert "redis" in compose.service(service)["depends_on"]


def test_production_compose_needs_a_password_and_publishes_no_host_port() -> None:
    with pytest.raises(ValueError, match="REDIS_PASSWORD"):
        ComposeFile(PRODUCTION, {})
    compose = ComposeFile(PRODUCTION, {"REDIS_PASSWORD": "pw"})
    redis = " ".join(compose.command("redis"))
    assert "--requirepass pw" in redis
    assert "--appendonly yes" in redis
    assert "--appendfsync always" in redis
    for service in ("worker", "gateway"):
        for variable in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            assert compose.environment(service)[variable] == "redis://:pw@redis:6379/0"
    for service in compose.data["services"]:
        assert "ports" not in compose.service(service), f"{service}: --scale would clash"
    gateway = compose.environment("gateway")
    assert gateway["TASKGATE_METRICS_LISTEN"] == "0.0.0.0:9464"
    assert [str(port) for port in compose.service("gateway")["expose"]] == ["50051", "9464"]
    mounted = {f"{SECRETS}/{name}" for name in compose.service("gateway")["secrets"]}
    for variable in ("TASKGATE_TOKENS_FILE", "TASKGATE_TLS_CERT", "TASKGATE_TLS_KEY"):
        assert gateway[variable] in mounted, variable


def test_production_services_run_with_password_tokens_and_tls(tmp_path: Path) -> None:
    variables = production_secrets(tmp_path)
    password = variables["REDIS_PASSWORD"]
    compose = ComposeFile(PRODUCTION, variables)
    home = tmp_path / "home"
    home.mkdir()
    paths = {SECRETS: tmp_path / "secrets", stages()[-1].workdir(): home}
    deployment = Deployment(compose, Host(free_port(), paths), tmp_path)
    try:
        redis = deployment.start_redis()
        assert deployment.healthy("redis")
        # What `ps` shows: Redis renames its process, so its password is not there.
        cmdline = Path(f"/proc/{redis.popen.pid}/cmdline").read_text()
        assert password not in cmdline
        wrong = ComposeFile(PRODUCTION, {"REDIS_PASSWORD": "wrong"})
        wrong_password = deployment.host.check(wrong, "redis")
        assert wrong_password.returncode == 1, wrong_password.stderr
        assert "WRONGPASS" in wrong_password.stderr
        no_worker = deployment.check("worker")
        assert no_worker.returncode != 0
        assert "No nodes replied" in no_worker.stdout + no_worker.stderr

        deployment.start("worker", WORKER_READY)
        assert deployment.healthy("worker")
        address = deployment.start_gateway()
        assert deployment.healthy("gateway", address)

        with tls_channel(address, tmp_path / "secrets" / "ca.pem") as channel:
            assert add_2_and_3(channel, TOKEN) == "5"
            with pytest.raises(grpc.RpcError) as refused:
                add_2_and_3(channel)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "grpc_server_handled_total{" in deployment.scrape_gateway()
        assert deployment.stop() == [0, 0, 0]
        assert password not in deployment.logs()
        gateway_log = deployment.started[-1].log_text().splitlines()
        assert all(isinstance(json.loads(line), dict) for line in gateway_log)  # JSON logs
    finally:
        deployment.stop()


def test_development_services_run_the_checkout_in_plaintext(tmp_path: Path) -> None:
    compose = ComposeFile(DEVELOPMENT)
    assert ".:/src:ro" in compose.service("gateway")["volumes"]
    assert compose.service("gateway")["ports"][0] == "127.0.0.1:50051:50051"
    assert not any(key.startswith("TASKGATE_TLS") for key in compose.environment("gateway"))
    deployment = Deployment(compose, Host(free_port(), {"/src": REPO_ROOT}), tmp_path)
    try:
        deployment.start_redis()
        assert deployment.healthy("redis")
        deployment.start("worker", WORKER_READY)
        assert deployment.healthy("worker")
        address = deployment.start_gateway()
        with grpc.insecure_channel(address) as channel:
            assert add_2_and_3(channel) == "5"
        assert deployment.healthy("gateway", address)
        assert not deployment.healthy("gateway", f"127.0.0.1:{free_port()}")
        assert "grpc_server_handled_total{" in deployment.scrape_gateway()
        # `docker compose stop` sends SIGTERM: every service shuts down cleanly.
        assert deployment.stop() == [0, 0, 0]
    finally:
        deployment.stop()


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
        with grpc.insecure_channel(address.group(1)) as channel:
            assert add_2_and_3(channel) == "5"
        # The command the greeting offers works as printed.
        cli = re.search(r"^  (.*taskgate submit tasks\.add 2 3 --wait)$", greeting, re.MULTILINE)
        assert cli, greeting
        command = ["sh", "-c", cli.group(1)]
        printed = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        assert printed.stdout.strip() == "5", printed
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
