"""A Redis primary, its replica and three sentinels, each Redis on a host of its own;
and the calls that run while it fails over.

The hosts come from tests/netns.py; the sentinels run beside the two Redis
servers and on a third small host, so a majority (2 of 3) survives the loss of
the primary's host. Short `down-after-milliseconds` and `failover-timeout` make a
failover take seconds.
"""

import functools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis

from scripts.stack import ManagedProcess, wait_until
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests import netns
from tests.fault_helpers import request, seconds, unique

MASTER_NAME = "taskgate"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
_READY = re.compile(r"Ready to accept connections")


@dataclass
class SentinelSet:
    """The Redis servers and sentinels of a lab, by host name."""

    redis_hosts: dict[str, netns.Host]
    sentinel_hosts: dict[str, netns.Host]
    network: str
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def redis_address(self, host: str) -> str:
        """The address of `host`'s Redis server on the lab's network."""
        return self.redis_hosts[host].addresses[self.network]

    def url(self, db: int = 0) -> str:
        """The `sentinel://` URL (one part per sentinel) that Celery and the gateway use."""
        return ";".join(
            f"sentinel://{host.addresses[self.network]}:{SENTINEL_PORT}/{db}"
            for host in self.sentinel_hosts.values()
        )

    def redis_client(self, host: str) -> redis.Redis:
        """A client of `host`'s Redis server, from the client host."""
        return redis.Redis(host=self.redis_address(host), port=REDIS_PORT, socket_timeout=5)

    def sentinel_client(self, host: str) -> redis.Redis:
        """A client of `host`'s sentinel."""
        address = self.sentinel_hosts[host].addresses[self.network]
        return redis.Redis(
            host=address, port=SENTINEL_PORT, socket_timeout=5, decode_responses=True
        )

    def primary_seen_by(self, host: str) -> str:
        """The primary's address as `host`'s sentinel names it now."""
        with self.sentinel_client(host) as client:
            address, _ = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            return str(address)

    def stop(self) -> None:
        """Stop every server and sentinel still running."""
        for process in self.processes.values():
            process.stop(timeout=5)


def _redis_argv(host: netns.Host, log_dir: Path, primary: str | None) -> list[str]:
    argv = [
        "redis-server", "--bind", "0.0.0.0", "--port", str(REDIS_PORT),
        "--protected-mode", "no", "--save", "", "--appendonly", "no",
        "--dir", str(log_dir), "--dbfilename", f"{host.name}.rdb",
    ]  # fmt: skip
    if primary is not None:
        argv += ["--replicaof", primary, str(REDIS_PORT)]
    return host.command(argv)


def _sentinel_config(path: Path, primary: str) -> None:
    # Sentinel rewrites its file (what it learns of replicas and peers): one file each.
    path.write_text(
        f"port {SENTINEL_PORT}\nbind 0.0.0.0\nprotected-mode no\n"
        f"sentinel monitor {MASTER_NAME} {primary} {REDIS_PORT} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
    )


def start_sentinel_set(sentinels: SentinelSet, log_dir: Path) -> None:
    """Start the primary (the first Redis host), its replica and the sentinels; return
    once the replica is in sync and every sentinel knows the replica and its peers."""
    primary_host, replica_host = sentinels.redis_hosts
    primary = sentinels.redis_address(primary_host)
    for name, of in ((primary_host, None), (replica_host, primary)):
        argv = _redis_argv(sentinels.redis_hosts[name], log_dir, of)
        process = ManagedProcess(f"redis-{name}", argv, os.environ, log_dir)
        sentinels.processes[f"redis-{name}"] = process
        process.wait_for_log(_READY)
    for name, host in sentinels.sentinel_hosts.items():
        config = log_dir / f"sentinel-{name}.conf"
        _sentinel_config(config, primary)
        argv = host.command(["redis-server", str(config), "--sentinel"])
        sentinels.processes[f"sentinel-{name}"] = ManagedProcess(
            f"sentinel-{name}", argv, os.environ, log_dir
        )
    wait_until(lambda: _replica_in_sync(sentinels, replica_host), "the replica's sync", 30)
    for name in sentinels.sentinel_hosts:
        wait_until(functools.partial(_sentinel_sees_all, sentinels, name), f"sentinel {name}", 30)


def _replica_in_sync(sentinels: SentinelSet, host: str) -> bool:
    with sentinels.redis_client(host) as client:
        return bool(client.info("replication").get("master_link_status") == "up")


def _sentinel_sees_all(sentinels: SentinelSet, host: str) -> bool:
    try:
        with sentinels.sentinel_client(host) as client:
            state = client.sentinel_master(MASTER_NAME)
    except redis.exceptions.RedisError:
        return False
    others = len(sentinels.sentinel_hosts) - 1
    return bool(state["num-other-sentinels"] == others and state["num-slaves"] == 1)


def replica_caught_up(sentinels: SentinelSet) -> bool:
    """True when the replica has everything the primary wrote so far."""
    primary_host, replica_host = sentinels.redis_hosts
    with sentinels.redis_client(primary_host) as client:
        written = int(client.info("replication")["master_repl_offset"])
    with sentinels.redis_client(replica_host) as client:
        return int(client.info("replication")["slave_repl_offset"]) >= written


SUBMIT_PACE = 0.05  # seconds between two Submits of the background traffic


@dataclass
class Submits:
    """Keyed Submits one after another until stopped; `lock` pauses them between calls."""

    stub: pb_grpc.TaskServiceStub
    acknowledged: list[tuple[str, int, float]] = field(default_factory=list)
    refused: list[tuple[grpc.StatusCode, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            with self.lock:
                self._one(number)
            self._stop.wait(SUBMIT_PACE)  # a steady trickle, not a flood

    def _one(self, number: int) -> None:
        ask = request("tasks.add", number, number, idempotency_key=unique())
        try:
            task_id = self.stub.Submit(ask, timeout=5).task_id
        except grpc.RpcError as exc:
            self.refused.append((exc.code(), time.monotonic()))
            return
        self.acknowledged.append((task_id, number, time.monotonic()))

    def acknowledged_after(self, moment: float) -> list[float]:
        return [at for _, _, at in self.acknowledged if at > moment]

    def stop(self) -> None:
        self._stop.set()


def wait_in_background(stub: pb_grpc.TaskServiceStub, task_id: str) -> list[object]:
    """Start a GetResult that waits up to 60 s; its answer (or error) lands in the list."""
    answers: list[object] = []

    def wait() -> None:
        ask = pb.GetResultRequest(task_id=task_id, wait=seconds(60))
        try:
            answers.append(stub.GetResult(ask, timeout=65))
        except grpc.RpcError as exc:
            answers.append(exc)

    threading.Thread(target=wait, daemon=True).start()
    return answers
