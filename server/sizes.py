"""How large a valid request can be, computed from the field limits.

The gRPC receive limit (`TASKGATE_MAX_MESSAGE_BYTES`) is sized for SubmitBatch, the
one request that may hold many submissions. Every other request has a far smaller
largest valid form; a request above it is refused before it is parsed, so that a
flood of requests that could never be valid costs the gateway no parsing and no copies.
"""

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from taskgate.server.codec import MAX_JSON_BYTES
from taskgate.server.requests import MAX_HEADER_VALUE_BYTES, MAX_HEADERS, MAX_NAME_BYTES
from taskgate.v1 import task_service_pb2 as pb

# A task id is a UUID (36 characters); a request naming one, with room to spare.
SMALL_REQUEST_BYTES = 4096

_LONGEST_DURATION = Duration(seconds=315_576_000_000, nanos=999_999_999)
_LATEST_MOMENT = Timestamp(seconds=253_402_300_799, nanos=999_999_999)


def _largest_submit() -> pb.SubmitRequest:
    """A SubmitRequest with every field at its limit (each byte one UTF-8 byte)."""
    name = "n" * MAX_NAME_BYTES
    value = "v" * MAX_HEADER_VALUE_BYTES
    headers = {f"{index:03d}{name[3:]}": value for index in range(MAX_HEADERS)}
    options = pb.SubmitOptions(
        eta=_LATEST_MOMENT,
        expires=_LATEST_MOMENT,
        queue=name,
        priority=255,
        retry_policy=pb.PublishRetryPolicy(
            max_retries=2**32 - 1,
            interval_start=_LONGEST_DURATION,
            interval_step=_LONGEST_DURATION,
            interval_max=_LONGEST_DURATION,
        ),
        headers=headers,
    )
    json_text = "j" * MAX_JSON_BYTES
    return pb.SubmitRequest(
        task=name, args_json=json_text, kwargs_json=json_text, options=options, idempotency_key=name
    )


def largest_valid_requests() -> dict[str, int]:
    """The largest valid request of each RPC but SubmitBatch, in bytes on the wire."""
    submit = _largest_submit()
    execute = pb.ExecuteRequest(submit=submit, wait=_LONGEST_DURATION, propagate=True)
    small = ("GetStatus", "GetResult", "Cancel", "WatchStatus", "ListTasks")
    return {
        "Submit": submit.ByteSize(),
        "Execute": execute.ByteSize(),
        **dict.fromkeys(small, SMALL_REQUEST_BYTES),
    }
