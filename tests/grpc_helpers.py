"""Small helpers for asserting on gRPC errors as a caller sees them."""

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


def call_error(call: Callable[[], Any]) -> grpc.RpcError:
    """Run `call`, which must fail, and return its RpcError."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def rich_status(error: grpc.RpcError) -> status_pb2.Status:
    """The `google.rpc.Status` the server attached to a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no rich status"
    return status


def detail(status: status_pb2.Status, message_type: type[M]) -> M:
    """The first detail of `message_type` in `status`."""
    for holder in status.details:
        found = message_type()
        if holder.Unpack(found):
            return found
    raise AssertionError(f"no {message_type.__name__} in the status details")


def violated_fields(error: grpc.RpcError) -> list[str]:
    """The field names of the BadRequest detail of an INVALID_ARGUMENT error."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    bad_request = detail(rich_status(error), error_details_pb2.BadRequest)
    return [violation.field for violation in bad_request.field_violations]
