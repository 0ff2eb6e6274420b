"""Hostile connections against a real gateway: silent, idle and old ones are dealt with.

(a) Connections that never finish their handshake, or go idle, are closed, and
    their number is capped; old ones are asked to reconnect without cutting a wait;
    clients that ping often, as meshes do, are not sent away.
"""

import socket
import time
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration

from scripts.stack import ManagedProcess
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.bounds_helpers import own_gateway
from tests.fault_helpers import poll
from tests.hostile_helpers import PREFACE, connections_on, frame, stays_false

CONNECTION_CAP = 64


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the gateway has closed `sock` (end of file or reset); reads what it sent."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def test_connections_that_never_finish_or_go_idle_are_closed(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path: Path
) -> None:
    gateway = own_gateway(
        stack_env,
        tmp_path,
        TASKGATE_HANDSHAKE_TIMEOUT="1",
        TASKGATE_CONNECTION_IDLE="2",
        TASKGATE_MAX_CONNECTIONS=str(CONNECTION_CAP),
    )
    pid = gateway.popen.pid
    host, _, port = gateway.address.rpartition(":")
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            pb_grpc.TaskServiceStub(channel).Submit(pb.SubmitRequest(task="tasks.add"))
        before = connections_on(pid, int(port))
        socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(150)]
        opened = time.monotonic()
        for index, sock in enumerate(socks):
            # Two in three stop after the preface; the rest finish it and then idle.
            sock.sendall(PREFACE if index % 3 else PREFACE + frame(4, 0, 0, b""))
            sock.setblocking(False)
        held = connections_on(pid, int(port)) - before
        assert held <= CONNECTION_CAP + 5, f"{held} connections held past the cap"
        with grpc.insecure_channel(gateway.address) as channel:
            request = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]")
            stub = pb_grpc.TaskServiceStub(channel)
            assert stub.Submit(request, timeout=10, wait_for_ready=True).task_id
            connected = time.monotonic() - opened
        poll(
            lambda: all(_closed_by_peer(sock) for sock in socks),
            "the gateway closing every half-open and idle connection",
            timeout=15,
        )
        closed = time.monotonic() - opened
        for sock in socks:
            sock.close()
        print(
            f"{held} of 150 silent connections held; a new caller served after "
            f"{connected:.1f}s; all closed by the gateway after {closed:.1f}s"
        )
        poll(
            lambda: connections_on(pid, int(port)) <= before + 2,
            "the gateway's connections given back",
        )
    finally:
        gateway.stop()


def _watch_connectivity(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    """Every connectivity state `channel` goes through from now on (grpc's own callback)."""
    seen: list[grpc.ChannelConnectivity] = []
    channel.subscribe(seen.append, try_to_connect=True)
    return seen


def test_old_connections_are_asked_to_reconnect_without_cutting_a_wait(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path: Path
) -> None:
    gateway = own_gateway(
        stack_env, tmp_path, TASKGATE_CONNECTION_MAX_AGE="1", TASKGATE_MAX_WAIT="10"
    )
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            task_id = stub.Submit(pb.SubmitRequest(task="tasks.sleep", args_json="[3]")).task_id
            states = _watch_connectivity(channel)
            wait = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=10))
            assert stub.GetResult(wait, timeout=15).ready, "the wait was cut off by the age"
            poll(lambda: grpc.ChannelConnectivity.IDLE in states, "the gateway's GOAWAY")
            assert stub.Submit(pb.SubmitRequest(task="tasks.add"), timeout=10).task_id
    finally:
        gateway.stop()


def test_clients_that_ping_often_are_not_sent_away(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path: Path
) -> None:
    gateway = own_gateway(stack_env, tmp_path, TASKGATE_MIN_CLIENT_PING="1")
    # As a mesh's client keeps an idle connection alive: a ping every 1.5 s, no calls.
    # (grpc's Python client alone stops after two pings without data; Go's does not.)
    options = [
        ("grpc.keepalive_time_ms", 1500),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    try:
        with grpc.insecure_channel(gateway.address, options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            states = _watch_connectivity(channel)
            # Five pings: under gRPC's defaults the third brings GOAWAY "too_many_pings".
            assert stays_false(lambda: grpc.ChannelConnectivity.IDLE in states, 8), states
            assert states[-1] == grpc.ChannelConnectivity.READY, states
    finally:
        gateway.stop()
