"""The catalog as the live workers see it: ListTasks at start-up, patterns that match
nothing, and names that no live worker registers, against a real gateway and workers."""

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, celery_env, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import managed, poll
from tests.grpc_helpers import call_error

ADD = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
# A good pattern, a typo and a wrong separator.
PATTERNS = ("tasks.*", "taks.*", "tasks.*;billing.*")


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


def test_require_registered_refuses_unavailable_until_a_worker_answers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Database 8: no other test's worker answers for these.
    env = celery_env(
        redis_server.db_url(8), redis_server.db_url(8), TASKGATE_REQUIRE_REGISTERED="on"
    )
    with managed(Gateway(env, tmp_path)) as gateway:
        stub = pb_grpc.TaskServiceStub(grpc.insecure_channel(gateway.address))
        early = call_error(lambda: stub.Submit(ADD, timeout=10))
        assert early.code() == grpc.StatusCode.UNAVAILABLE, early.details()
        assert "no worker has reported" in str(early.details())


@pytest.fixture(scope="module")
def strict(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, pb_grpc.TaskServiceStub]]:
    """A worker, then a gateway whose catalog has two mistakes and that requires names
    a live worker registers."""
    tmp_path = tmp_path_factory.mktemp("strict-catalog")
    # Database 9: no other test's worker answers for these.
    env = celery_env(redis_server.db_url(9), redis_server.db_url(9))
    strict_env = {
        **env,
        "TASKGATE_TASKS": ",".join(PATTERNS),
        "TASKGATE_REQUIRE_REGISTERED": "on",
    }
    with (
        managed(start_worker(env, tmp_path)),
        managed(Gateway(strict_env, tmp_path)) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        stub = pb_grpc.TaskServiceStub(channel)
        poll(lambda: _lists(stub, "tasks.add"), "ListTasks lists tasks.add", timeout=10)
        yield gateway, stub


def test_patterns_that_match_nothing_are_logged_and_listed(
    strict: tuple[Gateway, pb_grpc.TaskServiceStub],
) -> None:
    gateway, stub = strict
    response = stub.ListTasks(pb.ListTasksRequest(), timeout=10)
    assert list(response.unmatched_patterns) == ["taks.*", "tasks.*;billing.*"]
    log = gateway.log_text()
    assert "TASKGATE_TASKS pattern 'taks.*' matches no task that a live worker serves" in log
    assert (
        "TASKGATE_TASKS pattern 'tasks.*;billing.*' matches no task that a live worker "
        "serves; patterns are separated by commas"
    ) in log
    assert "pattern 'tasks.*' matches" not in log


def test_require_registered_refuses_a_name_no_worker_registers(
    strict: tuple[Gateway, pb_grpc.TaskServiceStub],
) -> None:
    _, stub = strict
    refused = call_error(lambda: stub.Submit(pb.SubmitRequest(task="tasks.nope"), timeout=10))
    assert refused.code() == grpc.StatusCode.NOT_FOUND, refused.details()
    outside = call_error(lambda: stub.Submit(pb.SubmitRequest(task="secret.task"), timeout=10))
    # Outside the catalog answers the same: a caller cannot map the catalog by probing.
    assert outside.details() == str(refused.details()).replace("tasks.nope", "secret.task")
    assert stub.Submit(ADD, timeout=10).task_id
