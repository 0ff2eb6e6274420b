"""go-grpc-prometheus's label values: `grpc_type` from the proto, `grpc_code` as Go spells it."""

from collections.abc import Iterable

import grpc
from google.protobuf.descriptor import ServiceDescriptor

# grpc.StatusCode names as Go's `codes.Code.String()` writes them: only CANCELLED
# ("Canceled") differs beyond its case.
GO_CODE_NAMES = {
    code: "OK"
    if code is grpc.StatusCode.OK
    else "Canceled"
    if code is grpc.StatusCode.CANCELLED
    else "".join(part.capitalize() for part in code.name.split("_"))
    for code in grpc.StatusCode
}
STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
"""grpc.StatusCode by its number (`google.rpc.Code`, what the gateway's errors carry)."""

_KINDS = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


def go_code_name(code: int) -> str:
    """The Go name of a status code given by its number; Unknown for a number gRPC lacks."""
    return GO_CODE_NAMES[STATUS_CODES.get(code, grpc.StatusCode.UNKNOWN)]


def method_types(services: Iterable[ServiceDescriptor]) -> dict[str, str]:
    """`/package.Service/Method` → `grpc_type`, from the proto (not from how it is served)."""
    return {
        f"/{service.full_name}/{method.name}": _KINDS[
            (method.client_streaming, method.server_streaming)
        ]
        for service in services
        for method in service.methods
    }


def split_method(method: str) -> tuple[str, str]:
    """`/package.Service/Method` → (`package.Service`, `Method`)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name
