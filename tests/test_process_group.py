"""Several gateway processes serve one port (TASKGATE_PROCESSES), and only they may:
calls reach every process, SIGTERM drains them all, a process that dies brings the
group down, and a stranger on the port is refused at start."""

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.duration_pb2 import Duration

from scripts.stack import REPO_ROOT, Gateway, RedisServer, celery_env, wait_until
from taskgate.server.config import GatewaySettings, ObservabilitySettings
from taskgate.server.process_group import member_settings
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.test_startup_errors import assert_one_line_error

DB = 11  # a database of its own: no worker of the session consumes its queues
GROUP_READY = re.compile(r"taskgate listening on \S+ with 2 processes \(pids (\d+), (\d+)\)")
CONNECTIONS = 16  # all of them landing on one process of two: once in 32,768 runs
_ESTABLISHED = "01"


@pytest.fixture(scope="module")
def group_env(redis_server: RedisServer) -> dict[str, str]:
    """A gateway of two processes on the module's own database."""
    url = redis_server.db_url(DB)
    return celery_env(url, url, TASKGATE_PROCESSES="2")


def start_group(env: dict[str, str], log_dir: Path) -> tuple[Gateway, list[int]]:
    """The group's parent, once every process serves, and the processes' pids."""
    gateway = Gateway(env, log_dir)
    ready = gateway.wait_for_log(GROUP_READY)
    return gateway, [int(ready.group(1)), int(ready.group(2))]


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections to `port` whose socket the process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == _ESTABLISHED and local_port == port and fields[9] in inodes:
                held += 1
    return held


def alive(pid: int) -> bool:
    """True while `pid` runs (and was not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    """CONNECTIONS channels to the address the test sets, each its own TCP connection."""
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def open_channels(address: str, opened: list[grpc.Channel]) -> list[pb_grpc.TaskServiceStub]:
    """Channels that share no connection (gRPC pools them per process by default)."""
    for _ in range(CONNECTIONS):
        opened.append(grpc.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)]))
    return [pb_grpc.TaskServiceStub(channel) for channel in opened]


def test_calls_reach_every_process_and_sigterm_drains_them_all(
    group_env: dict[str, str],
    redis_server: RedisServer,
    tmp_path: Path,
    channels: list[grpc.Channel],
) -> None:
    gateway, pids = start_group(group_env, tmp_path)
    try:
        stubs = open_channels(gateway.address, channels)
        queue = f"nobody-{uuid.uuid4().hex[:8]}"
        submit = pb.SubmitRequest(task="tasks.add", options=pb.SubmitOptions(queue=queue))
        task_ids = [stub.Submit(submit, timeout=10).task_id for stub in stubs]
        port = int(gateway.address.rpartition(":")[2])
        held = [connections_held(pid, port) for pid in pids]
        assert all(held), f"connections per process: {held}"
        waits = [
            stub.GetResult.future(
                pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=3)), timeout=30
            )
            for stub, task_id in zip(stubs, task_ids, strict=True)
        ]
        client = redis.Redis.from_url(redis_server.db_url(DB))
        keys = [f"celery-task-meta-{task_id}" for task_id in task_ids]
        # Every wait is in a gateway process once that process subscribed its task's key.
        wait_until(lambda: sum(n for _, n in client.pubsub_numsub(*keys)) == len(keys), "waits")
        gateway.signal(signal.SIGTERM)
        replies = [wait.result() for wait in waits]
        assert [(reply.task_id, reply.ready) for reply in replies] == [
            (task_id, False) for task_id in task_ids
        ]
        assert gateway.popen.wait(30) == 0
        assert not [pid for pid in pids if alive(pid)]
        assert gateway.log_text().count("stopping: calls in flight have") == 2
    finally:
        gateway.stop()


def test_a_process_that_dies_brings_the_group_down(
    group_env: dict[str, str], tmp_path: Path
) -> None:
    gateway, pids = start_group(group_env, tmp_path)
    try:
        os.kill(pids[0], signal.SIGKILL)
        assert gateway.popen.wait(30) == 1
        assert not alive(pids[1])
        assert f"gateway process {pids[0]} exited with status -9" in gateway.log_text()
    finally:
        gateway.stop()


def test_the_processes_stop_when_their_parent_is_killed(
    group_env: dict[str, str], tmp_path: Path
) -> None:
    gateway, pids = start_group(group_env, tmp_path)
    try:
        gateway.popen.kill()
        gateway.popen.wait(10)
        wait_until(lambda: not [pid for pid in pids if alive(pid)], "the orphaned processes' exit")
    finally:
        gateway.stop()


@pytest.mark.parametrize("stranger_shares", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_a_stranger_on_the_port_stops_the_group_with_one_line(
    group_env: dict[str, str], stranger_shares: bool
) -> None:
    """Also a server of the same user that asked to share the port is refused."""
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(stranger_shares))
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        address = f"127.0.0.1:{stranger.getsockname()[1]}"
        finished = subprocess.run(
            [sys.executable, "-m", "taskgate.server"],
            env={**group_env, "TASKGATE_LISTEN": address},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert_one_line_error(finished, "TASKGATE_LISTEN", address, "Address already in use")


def test_each_process_serves_metrics_on_a_port_of_its_own() -> None:
    def metrics_of(listen: str | None, number: int) -> str | None:
        observability = replace(ObservabilitySettings(), metrics_listen=listen)
        settings = GatewaySettings(observability=observability)
        return member_settings(settings, number).observability.metrics_listen

    assert [metrics_of("127.0.0.1:9464", n) for n in range(3)] == [
        "127.0.0.1:9464",
        "127.0.0.1:9465",
        "127.0.0.1:9466",
    ]
    assert metrics_of("127.0.0.1:0", 2) == "127.0.0.1:0"  # each picks a free port
    assert metrics_of(None, 1) is None  # metrics off stays off
