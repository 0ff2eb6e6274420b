"""A minimal HTTP/1.1 JSON client with keep-alive connections, for talking to Flower.

It does only what the benchmark needs (one request at a time per connection,
bodies framed by Content-Length, which Tornado sends on every finished reply),
so that the time measured is Flower's and not a client library's.
"""

import asyncio
import json
from typing import Any

_HEAD_END = b"\r\n\r\n"


class HttpError(Exception):
    """The server answered with a status other than 200, or not in HTTP/1.1."""


class HttpConnection:
    """One keep-alive TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.reusable = True

    @classmethod
    async def open(cls, host: str, port: int) -> "HttpConnection":
        """Connect to `host:port`."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, method: str, target: str, host: str, body: bytes) -> tuple[int, bytes]:
        """Send one request and read its reply: (status, body)."""
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode("ascii") + body)
        await self._writer.drain()
        lines = (await self._reader.readuntil(_HEAD_END)).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise HttpError(f"not an HTTP/1.x reply: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise HttpError(f"a reply without Content-Length: {lines[0]!r}")
        payload = await self._reader.readexactly(int(headers["content-length"]))
        self.reusable = headers.get("connection", "").lower() != "close"
        return int(rest.partition(" ")[0]), payload

    def close(self) -> None:
        """Close the socket."""
        self.reusable = False
        self._writer.close()


class JsonClient:
    """Keep-alive connections to one server; each request borrows an idle one or opens one."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._idle: list[HttpConnection] = []

    async def request(self, method: str, target: str, payload: object = None) -> Any:
        """Send `payload` as JSON and return the decoded JSON reply; HttpError unless 200."""
        body = b"" if payload is None else json.dumps(payload).encode()
        connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = await HttpConnection.open(self._host, self._port)
        try:
            async with asyncio.timeout(self._timeout):
                status, reply = await connection.request(
                    method, target, f"{self._host}:{self._port}", body
                )
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
        if status != 200:
            raise HttpError(f"{method} {target}: HTTP {status}: {reply[:200]!r}")
        return json.loads(reply)

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()
