"""Requests as the gateway's interceptor receives them: decoded by a deserializer that
never raises, so that bytes that are not the method's message reach the handler as a
marker (INVALID_ARGUMENT), not as grpc's UNKNOWN."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.rpc import code_pb2

from taskgate.server.errors import GatewayError


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not the message the method takes."""

    error: str
    too_large: bool = False


class RequestNotReceived(GatewayError):
    """No request arrived: gRPC refused one over the message size limit (or none was sent)."""

    code = code_pb2.RESOURCE_EXHAUSTED

    def __init__(self) -> None:
        super().__init__("no request arrived: over TASKGATE_MAX_MESSAGE_BYTES, or none sent")


def tolerant(
    deserializer: Callable[[bytes], Any] | None, rpc: str, largest: int | None
) -> Callable[[bytes], Any] | None:
    """`deserializer`, never raising: a request that is not the message, or is larger
    than any valid `rpc` request (`largest`), comes out as Undecodable.

    grpc answers UNKNOWN (and logs a traceback) when a deserializer raises; handing the
    handler a marker instead lets the caller get INVALID_ARGUMENT. A request larger than
    any valid one is refused unparsed: the cheapest check comes first.
    """
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        if largest is not None and len(data) > largest:
            return Undecodable(
                f"is {len(data)} bytes; a valid {rpc} request is at most {largest}", True
            )
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return deserialize
