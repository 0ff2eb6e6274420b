"""Helpers for the hostile-input tests: raw broker messages, raw bytes on a port, /proc.

Nothing here goes through the gateway: these are the ways around it that an
attacker with network access to the broker or the gRPC port has.
"""

import contextlib
import os
import random
import socket
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from kombu import Connection, Producer

from taskgate.v1 import task_service_pb2 as pb

CELERY_QUEUE = "celery"


def publish_raw_task(
    broker_url: str, task: str, args: list[Any], *, serializer: str, task_id: str | None = None
) -> str:
    """LPUSH a Celery protocol-2 task message onto the "celery" list, body encoded by `serializer`.

    Built with kombu's own Producer, so the Redis envelope (body, headers, properties,
    delivery info) is exactly what Celery's own publish writes; only the content type
    differs. Returns the task id.
    """
    task_id = task_id or str(uuid.uuid4())
    headers = {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": repr(args), "kwargsrepr": "{}", "origin": "hostile-test",
        "ignore_result": False,
    }  # fmt: skip
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    with Connection(broker_url) as connection, connection.channel() as channel:
        Producer(channel).publish(
            (args, {}, embed),
            exchange="",
            routing_key=CELERY_QUEUE,
            serializer=serializer,
            headers=headers,
            correlation_id=task_id,
            delivery_mode=2,
        )
    return task_id


class CreatesFileWhenUnpickled:
    """Unpickling this creates `path`: the proof that someone loaded a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.path), "x"))


def stays_false(check: Callable[[], bool], seconds: float) -> bool:
    """True when `check` stays false for `seconds`: evidence that something never happens."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return False
        time.sleep(0.05)
    return not check()


# --- gRPC calls, as a caller sees their outcome ---------------------------------------

REQUEST_TYPES: dict[str, type[Message]] = {
    "Submit": pb.SubmitRequest,
    "GetStatus": pb.GetStatusRequest,
    "GetResult": pb.GetResultRequest,
    "Execute": pb.ExecuteRequest,
    "SubmitBatch": pb.SubmitBatchRequest,
    "Cancel": pb.CancelRequest,
    "WatchStatus": pb.WatchStatusRequest,
    "ListTasks": pb.ListTasksRequest,
}


def answer(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Run `call`; the status code it ended with, and the details of an error."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _identity(body: bytes) -> bytes:
    return body


def send_raw(channel: grpc.Channel, rpc: str, body: bytes, timeout: float) -> None:
    """Send `body` as the request of `rpc`, bypassing the client's serializer."""
    path = f"/taskgate.v1.TaskService/{rpc}"
    if rpc == "WatchStatus":
        list(channel.unary_stream(path, _identity, _identity)(body, timeout=timeout))
    else:
        channel.unary_unary(path, _identity, _identity)(body, timeout=timeout)


def decodes(rpc: str, body: bytes) -> bool:
    """True when the gateway's own protobuf library can parse `body` as `rpc`'s request."""
    try:
        REQUEST_TYPES[rpc].FromString(body)
    except DecodeError:
        return False
    return True


# --- raw bytes on the gRPC port -------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _HEADERS, _RST, _PING, _WINDOW, _CONTINUATION, _DATA = 4, 1, 3, 6, 8, 9, 0


def frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    """An HTTP/2 frame; `length` may lie about the payload's size."""
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def garbage(rng: random.Random) -> list[bytes]:
    """What a confused or hostile client may send on a gRPC port, one item per connection."""
    settings = frame(_SETTINGS, 0, 0, b"")
    headers_open = frame(_HEADERS, 0, 1, rng.randbytes(40))  # no END_HEADERS
    return [
        b"",
        rng.randbytes(1),
        rng.randbytes(64),
        rng.randbytes(16_384),
        b"\x00" * 100_000,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"POST /taskgate.v1.TaskService/Submit HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(32),  # a TLS ClientHello
        *(PREFACE[:cut] for cut in (1, 5, 12, len(PREFACE) - 1)),
        PREFACE,
        PREFACE + rng.randbytes(64),
        PREFACE + frame(_SETTINGS, 0, 0, b"", length=2**24 - 1),
        PREFACE + settings + frame(_HEADERS, 0x5, 1, rng.randbytes(40)),  # garbage HPACK
        PREFACE + settings + frame(_WINDOW, 0, 0, b"\x00\x00\x00\x00"),  # a zero increment
        PREFACE + settings + frame(_DATA, 0, 0, b"data on stream 0"),
        PREFACE + settings + frame(_RST, 0, 7, b"\x00\x00\x00\x08"),  # an idle stream
        PREFACE + settings + frame(_PING, 0, 0, b"12345678") * 2000,
        PREFACE + settings + headers_open + frame(_CONTINUATION, 0, 1, b"\x00" * 100) * 2000,
    ]


def throw(address: str, payload: bytes, *, abort: bool) -> None:
    """Connect, send `payload`, and close (with a TCP reset when `abort`)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        if abort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):  # the gateway hung up first: that is its right
            sock.sendall(payload)


# --- the gateway process as the kernel sees it ---------------------------------------


def thread_count(pid: int) -> int:
    """Threads in process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for process {pid}")


def connections_on(pid: int, port: int) -> int:
    """The TCP connections process `pid` holds on its local `port` (its callers'), from
    /proc. Unlike a count of all its files, Redis and broker connections the gateway
    opens meanwhile (a sweep, a readiness check) do not count."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while we look
            target = os.readlink(fd)
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
    held = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            listening = state == "0A"
            if not listening and int(local.rpartition(":")[2], 16) == port and inode in sockets:
                held += 1
    return held
