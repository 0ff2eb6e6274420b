"""Builds replies from task views."""

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from taskgate.server import codec
from taskgate.server.auth import Principal
from taskgate.server.catalog import Catalog
from taskgate.server.errors import TaskDidNotSucceed
from taskgate.server.gateway import TaskView
from taskgate.server.registry import RegisteredTask, WorkerView
from taskgate.v1 import task_service_pb2 as pb


def _timestamp(value: object) -> Timestamp | None:
    if isinstance(value, float):
        stamp = Timestamp()
        stamp.FromNanoseconds(int(value * 1e9))
        return stamp
    if isinstance(value, str):
        stamp = Timestamp()
        stamp.FromDatetime(datetime.fromisoformat(value))
        return stamp
    return None


def status_response(view: TaskView) -> pb.GetStatusResponse:
    """GetStatus's reply."""
    snapshot, extended = view.snapshot, view.snapshot.extended
    return pb.GetStatusResponse(
        task_id=view.task_id,
        state=snapshot.state,
        state_name=snapshot.state_name,
        meta_json=snapshot.meta_json(),
        task=view.record.task if view.record else str(extended.get("name") or ""),
        submitted_at=_timestamp(view.record.submitted_at if view.record else None),
        date_done=_timestamp(extended.get("date_done")),
        retries=int(extended.get("retries") or 0),
        worker=str(extended.get("worker") or ""),
    )


def result_response(
    view: TaskView, propagate: bool, tracebacks: bool = True
) -> pb.GetResultResponse:
    """GetResult's reply; with `propagate`, a failed or revoked task raises instead.

    Without `tracebacks` (TASKGATE_TRACEBACKS=off) the worker's traceback, with its
    file paths and code, is withheld from the caller.
    """
    snapshot = view.snapshot
    response = pb.GetResultResponse(
        task_id=view.task_id, state=snapshot.state, ready=snapshot.ready
    )
    if not snapshot.ready:
        return response
    if snapshot.succeeded:
        response.result_json = codec.dumps(snapshot.result)
        return response
    error = snapshot.error()
    if not tracebacks:
        error.ClearField("traceback")
    if propagate:
        reason = "TASK_REVOKED" if snapshot.state == pb.TASK_STATE_REVOKED else "TASK_FAILED"
        summary = f"task {view.task_id} ended {snapshot.state_name}: {error.type}: {error.message}"
        raise TaskDidNotSucceed(reason, view.task_id, error, summary)
    response.error.CopyFrom(error)
    return response


def execute_response(
    view: TaskView, propagate: bool, tracebacks: bool = True
) -> pb.ExecuteResponse:
    """Execute's reply: GetResult's, field for field."""
    result = result_response(view, propagate, tracebacks)
    # ExecuteResponse repeats GetResultResponse's fields under the same numbers.
    return pb.ExecuteResponse.FromString(result.SerializeToString())


def task_list_response(
    catalog: Catalog, view: WorkerView, caller: Principal
) -> pb.ListTasksResponse:
    """The tasks this caller may submit: those workers serve, and exact names none serves."""
    served = [task for name, task in view.tasks.items() if catalog.allows(name)]
    unserved = [RegisteredTask(name) for name in catalog.exact_names() if name not in view.tasks]
    tasks = sorted(
        (task for task in served + unserved if caller.may_submit(task.name)),
        key=lambda task: task.name,
    )
    return pb.ListTasksResponse(
        tasks=[
            pb.TaskInfo(name=task.name, workers=task.workers, ignore_result=task.ignore_result)
            for task in tasks
        ],
        workers_checked_at=_timestamp(view.checked_at),
        unmatched_patterns=catalog.unmatched(view.tasks),
    )
