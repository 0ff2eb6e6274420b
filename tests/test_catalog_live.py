"""The catalog as the live workers see it: ListTasks at start-up, patterns that match
nothing, and names that no live worker registers, against a real gateway and workers."""

from pathlib import Path

import grpc

from scripts.stack import Gateway, RedisServer, celery_env, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import managed, poll
from tests.grpc_helpers import call_error


def _lists(stub: pb_grpc.TaskServiceStub, name: str) -> bool:
    try:
        response = stub.ListTasks(pb.ListTasksRequest(), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return False
    return name in {task.name for task in response.tasks}


def test_list_tasks_waits_for_workers_started_with_the_gateway(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Database 5: the session's worker on database 0 must not answer for these.
    env = celery_env(redis_server.db_url(5), redis_server.db_url(5))
    with managed(Gateway(env, tmp_path)) as gateway:
        stub = pb_grpc.TaskServiceStub(grpc.insecure_channel(gateway.address))
        early = call_error(lambda: stub.ListTasks(pb.ListTasksRequest(), timeout=10))
        assert early.code() == grpc.StatusCode.UNAVAILABLE, early.details()
        with managed(start_worker(env, tmp_path)):
            # The next background ask is 30 s away (TASKGATE_WORKERS_REFRESH) unless the
            # gateway asks again soon after an empty answer.
            poll(lambda: _lists(stub, "tasks.add"), "ListTasks lists tasks.add", timeout=10)
