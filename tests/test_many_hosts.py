"""Many hosts, proven: gateways and workers on separate network stacks, one Redis.

The hosts are Linux network namespaces joined by veth pairs (tests/netns.py):
a Redis host and two worker hosts on a back network, two gateway hosts on the
back network and a front one, and the test process itself as the client host,
on both (the back network only so that the test can look into Redis). The
client balances over both gateways the way a gRPC client in a mesh does:
round robin over their addresses, client-side health checking on the
readiness service name, and retries of UNAVAILABLE. Every Submit carries an
idempotency key, so a retried Submit can never queue a second task, and a call that
still ends UNAVAILABLE or DEADLINE_EXCEEDED (one caught on a gateway as it loses Redis
holds a Redis command for its socket timeout) is tried again with it, as the contract
asks of a caller.

A host is "cut off" by pulling its cable: its side of the veth pair goes down.
"""

import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.stack import Gateway, ManagedProcess, start_worker, wait_until
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests import netns
from tests.fault_helpers import (
    await_result,
    fault_env,
    in_background,
    outcome,
    poll,
    quick_redelivery_options,
    runs,
    unique,
    write_config,
)

GATEWAY_PORT = 50051
REDIS_PORT = 6379
READINESS = "taskgate.v1.TaskService"
# Workers give a cut-off worker's message to another worker once it is this old.
VISIBILITY_SECONDS = 4
# How long the gateway's readiness may take to follow a lost or found Redis.
READINESS_BOUND = 30.0
# A caller's tries of one call, and the codes after which it tries again.
ATTEMPTS = 3
# An access-log line: round robin may hand one gateway only the GetResult calls.
SERVED_A_CALL = re.compile(r"taskgate\.access: \w+ OK\b")
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
BALANCED_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": READINESS},
        "methodConfig": [
            {
                "name": [{"service": "taskgate.v1.TaskService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


@dataclass
class Cluster:
    """The lab's hosts and what runs on them."""

    lab: netns.Lab
    log_dir: Path
    env: dict[str, str]
    redis: redis.Redis
    gateways: dict[str, Gateway] = field(default_factory=dict)
    workers: dict[str, ManagedProcess] = field(default_factory=dict)

    def start_gateway(self, host: str) -> Gateway:
        """Start (or start again) the gateway of `host`, listening on all its interfaces."""
        gateway = Gateway(
            self.env,
            self.log_dir,
            listen=f"0.0.0.0:{GATEWAY_PORT}",
            run_on=self.lab.hosts[host].command([]),
        )
        self.gateways[host] = gateway
        return gateway

    def start_worker(self, host: str) -> ManagedProcess:
        """Start (or start again) the worker of `host`."""
        # Two pool processes: the worker busy with the task the test cuts it off with still
        # asks the broker for more, so a BRPOP may be in flight at the cut; the gateways'
        # reclaimer gives such a message back (README, Guarantees).
        worker = start_worker(
            self.env,
            self.log_dir,
            concurrency=2,
            name=f"{host}-{uuid.uuid4().hex[:6]}",
            run_on=self.lab.hosts[host].command([]),
        )
        self.workers[host] = worker
        return worker

    def address(self, host: str) -> str:
        """Where the client host reaches `host`'s gateway."""
        return f"{self.lab.hosts[host].addresses['front']}:{GATEWAY_PORT}"

    def balanced_channel(self) -> grpc.Channel:
        """A client channel over both gateways, as a mesh client would hold it."""
        target = "ipv4:" + ",".join(self.address(host) for host in ("gw1", "gw2"))
        options = [("grpc.service_config", BALANCED_SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        return grpc.insecure_channel(target, options=options)


def _require_namespaces() -> None:
    """Skip, with the reason, where the kernel refuses namespaces; fail instead under CI."""
    try:
        if os.geteuid() != 0:
            raise netns.NamespacesUnavailable("making network namespaces needs root")
        netns.check_available()
    except netns.NamespacesUnavailable as exc:
        if os.environ.get("TASKGATE_REQUIRE_NETNS") == "1":
            pytest.fail(f"TASKGATE_REQUIRE_NETNS=1, but {exc}")
        pytest.skip(str(exc))


def _subnet() -> int:
    """A third octet of our own, so that two runs on one machine do not clash."""
    return os.getpid() % 250 + 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Redis, two gateways and two workers, each on a host of its own."""
    _require_namespaces()
    log_dir = tmp_path_factory.mktemp("many-hosts")
    octet = _subnet()
    with netns.lab({"front": f"10.231.{octet}", "back": f"10.232.{octet}"}) as lab:
        lab.add_host("client", {"front": 100, "back": 100}, own_stack=False)
        redis_host = lab.add_host("redis", {"back": 1})
        for number, host in enumerate(("gw1", "gw2"), start=11):
            lab.add_host(host, {"front": number, "back": number})
        for number, host in enumerate(("w1", "w2"), start=21):
            lab.add_host(host, {"back": number})
        redis_server = _start_redis(redis_host, log_dir)
        url = f"redis://{redis_host.addresses['back']}:{REDIS_PORT}/0"
        write_config(log_dir, broker_transport_options=quick_redelivery_options(VISIBILITY_SECONDS))
        client = redis.Redis.from_url(url, socket_timeout=5)
        made = Cluster(lab, log_dir, fault_env(url, url, config_dir=log_dir), client)
        try:
            for host in ("gw1", "gw2"):
                made.start_gateway(host)
            for host in ("w1", "w2"):
                made.start_worker(host)
            yield made
        finally:
            for process in [*made.gateways.values(), *made.workers.values()]:
                process.stop(timeout=5)
            redis_server.stop(timeout=5)
            client.close()


def _start_redis(host: netns.Host, log_dir: Path) -> ManagedProcess:
    argv = [
        "redis-server", "--bind", "0.0.0.0", "--port", str(REDIS_PORT),
        "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(log_dir),
    ]  # fmt: skip
    server = ManagedProcess("redis", host.command(argv), os.environ, log_dir)
    server.wait_for_log(re.compile(r"Ready to accept connections"))
    return server


@dataclass
class Traffic:
    """Calls from the client host, one after another, until stopped: Submit (keyed),
    then GetResult with wait; every answer is checked."""

    stub: pb_grpc.TaskServiceStub
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            self._one_call(number)

    def _one_call(self, number: int) -> None:
        ask = pb.SubmitRequest(
            task="tasks.add", args_json=json.dumps([number, number]), idempotency_key=unique()
        )
        for attempt in range(1, ATTEMPTS + 1):
            try:
                task_id = self.stub.Submit(ask, timeout=10).task_id
                result = await_result(self.stub, task_id, timeout=30)
                break
            except grpc.RpcError as exc:
                # What the contract asks of a caller: a Submit that ended UNAVAILABLE or
                # DEADLINE_EXCEEDED may have been queued, so it is retried with its key.
                # A call caught on a gateway at the moment it loses Redis ends so.
                if exc.code() not in RETRIED or attempt == ATTEMPTS:
                    self.failures.append(f"call {number}: {exc}")
                    return
            except AssertionError as exc:
                self.failures.append(f"call {number}: {exc}")
                return
        if result.result_json != str(2 * number):
            self.failures.append(f"call {number}: {result.result_json!r}")
            return
        self.succeeded += 1

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def traffic(cluster: Cluster) -> Iterator[Traffic]:
    """Balanced calls running in the background for the whole test."""
    with (
        cluster.balanced_channel() as channel,
        in_background(Traffic(pb_grpc.TaskServiceStub(channel))) as load,
    ):
        yield load


def _calls_go_on(traffic: Traffic, more: int) -> None:
    """Wait until `more` further calls have succeeded."""
    target = traffic.succeeded + more
    poll(lambda: traffic.succeeded >= target, f"{more} more calls succeeded", timeout=60)


def test_calls_keep_succeeding_while_each_gateway_in_turn_is_killed_and_restarted(
    cluster: Cluster, traffic: Traffic
) -> None:
    """A rolling restart, as an operator runs one: each gateway is killed, started again,
    and the next is killed only once the restarted one answers calls again. Waiting for
    that matters: the client reconnects to a gateway it lost with a growing backoff, so
    killing gw2 the moment gw1 is up left the client, for seconds, with no gateway it would
    try (UNAVAILABLE, "connections to all backends failing", in a CI run)."""
    _calls_go_on(traffic, 5)
    for host in ("gw1", "gw2"):
        cluster.gateways[host].popen.kill()
        cluster.gateways[host].stop()
        _calls_go_on(traffic, 10)
        restarted = cluster.start_gateway(host)
        restarted.wait_for_log(SERVED_A_CALL, timeout=60)
        _calls_go_on(traffic, 5)
    assert traffic.failures == []


def test_a_worker_host_cut_off_mid_task_has_its_task_run_by_the_other_worker_host(
    cluster: Cluster, traffic: Traffic
) -> None:
    """The worker that took a task loses its network; the other worker runs the task
    once the message's visibility timeout passes, and every call answered OK meanwhile
    still completes."""
    with cluster.balanced_channel() as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        key = unique()
        ask = pb.SubmitRequest(task="tests.faults.hold", args_json=json.dumps([key, 60]))
        task_id = stub.Submit(ask, timeout=10).task_id
        status = pb.GetStatusRequest(task_id=task_id)
        poll(lambda: runs(cluster.redis, key) == 1, "the task started", timeout=30)
        taken_by = stub.GetStatus(status, timeout=10).worker
        cut_off = next(host for host, w in cluster.workers.items() if w.name in taken_by)
        other = next(host for host in cluster.workers if host != cut_off)
        cluster.lab.hosts[cut_off].set_link("back", up=False)
        try:
            _calls_go_on(traffic, 10)
            result = await_result(stub, task_id, timeout=VISIBILITY_SECONDS + 45)
        finally:
            cluster.workers[cut_off].popen.kill()
            cluster.workers[cut_off].stop()
            cluster.lab.hosts[cut_off].set_link("back", up=True)
        assert result.state == pb.TASK_STATE_SUCCESS
        assert cluster.workers[other].name in stub.GetStatus(status, timeout=10).worker
        assert runs(cluster.redis, key) == 2
    assert traffic.failures == []
    cluster.start_worker(cut_off)


def _readiness(cluster: Cluster, host: str) -> int:
    """The gateway's readiness as a Kubernetes or Envoy probe would read it."""
    with grpc.insecure_channel(cluster.address(host)) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types lack Check
        status: int = health.Check(
            health_pb2.HealthCheckRequest(service=READINESS), timeout=5
        ).status
        return status


def test_a_gateway_cut_off_from_redis_answers_unavailable_and_the_client_uses_the_other(
    cluster: Cluster, traffic: Traffic
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    cluster.lab.hosts["gw2"].set_link("back", up=False)
    try:
        with grpc.insecure_channel(cluster.address("gw2")) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            submit = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]")
            answer = outcome(lambda: stub.Submit(submit, timeout=15))
        assert answer.code == grpc.StatusCode.UNAVAILABLE, str(answer)
        poll(
            lambda: _readiness(cluster, "gw2") != serving,
            "gw2 turned NOT_SERVING",
            timeout=READINESS_BOUND,
        )
        _calls_go_on(traffic, 20)
    finally:
        cluster.lab.hosts["gw2"].set_link("back", up=True)
    wait_until(lambda: _readiness(cluster, "gw2") == serving, "gw2 SERVING", READINESS_BOUND)
    assert traffic.failures == []
