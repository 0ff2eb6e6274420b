"""Builds replies from task snapshots, and the wait budget from a request."""

from typing import Any

import grpc

from server import codec
from server.errors import InvalidArgument, TaskDidNotSucceed
from server.results import TaskSnapshot
from taskgate.v1 import task_service_pb2 as pb

# Answer a little before the caller's deadline, so the reply (ready=false) still arrives.
_DEADLINE_MARGIN_SECONDS = 0.05


def wait_budget(
    request: pb.GetResultRequest, context: grpc.aio.ServicerContext[Any, Any], cap: float
) -> float:
    """Seconds to wait: the requested wait, never past the deadline or the gateway's cap."""
    wait = request.wait.ToTimedelta().total_seconds() if request.HasField("wait") else 0.0
    if wait < 0:
        raise InvalidArgument("wait", "must not be negative")
    remaining = context.time_remaining()
    if remaining is not None:
        wait = min(wait, remaining - _DEADLINE_MARGIN_SECONDS)
    return max(0.0, min(wait, cap))


def status_response(task_id: str, snapshot: TaskSnapshot) -> pb.GetStatusResponse:
    """GetStatus's reply."""
    return pb.GetStatusResponse(
        task_id=task_id,
        state=snapshot.state,
        state_name=snapshot.state_name,
        meta_json=snapshot.meta_json(),
    )


def result_response(task_id: str, snapshot: TaskSnapshot, propagate: bool) -> pb.GetResultResponse:
    """GetResult's reply; with `propagate`, a failed or revoked task raises instead."""
    response = pb.GetResultResponse(task_id=task_id, state=snapshot.state, ready=snapshot.ready)
    if not snapshot.ready:
        return response
    if snapshot.succeeded:
        response.result_json = codec.dumps(snapshot.result)
        return response
    error = snapshot.error()
    if propagate:
        reason = "TASK_REVOKED" if snapshot.state == pb.TASK_STATE_REVOKED else "TASK_FAILED"
        summary = f"task {task_id} ended {snapshot.state_name}: {error.type}: {error.message}"
        raise TaskDidNotSucceed(reason, task_id, error, summary)
    response.error.CopyFrom(error)
    return response
