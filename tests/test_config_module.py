"""The first-steps article's `celeryconfig.py`, given to taskgate through CELERY_CONFIG_MODULE."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.stack import (
    REPO_ROOT,
    Gateway,
    ManagedProcess,
    RedisServer,
    celery_env,
    start_worker,
    with_config_module,
)
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error, violated_fields

# The article's settings, with Redis in place of RabbitMQ and the rpc:// backend, a
# rate limit fast enough for a test, and queues that must be declared.
CELERYCONFIG = """
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Asia/Seoul"
enable_utc = True
task_routes = {"tasks.echo_request": "low-priority"}
task_annotations = {"tasks.add": {"rate_limit": "120/m"}}
task_create_missing_queues = False
task_queues = {"celery": {}, "low-priority": {}}
"""


def _config_env(tmp_path: Path, redis_server: RedisServer, body: str) -> dict[str, str]:
    # Database 3: the session's worker on database 0 must not take these tasks.
    env = celery_env(redis_server.db_url(3), redis_server.db_url(3))
    return with_config_module(env, tmp_path, "articleconfig", body)


@pytest.fixture(scope="module")
def configured(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[pb_grpc.TaskServiceStub]:
    """A worker on both queues and a gateway, both loading the article's configuration."""
    tmp_path = tmp_path_factory.mktemp("articleconfig")
    env = _config_env(tmp_path, redis_server, CELERYCONFIG)
    worker = start_worker(env, tmp_path, queues="celery,low-priority")
    gateway = Gateway(env, tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            yield pb_grpc.TaskServiceStub(channel)
    finally:
        gateway.stop()
        worker.stop()


def _run(stub: pb_grpc.TaskServiceStub, request: pb.SubmitRequest) -> pb.GetResultResponse:
    execute = pb.ExecuteRequest(submit=request, wait=Duration(seconds=20))
    return pb.GetResultResponse.FromString(stub.Execute(execute, timeout=30).SerializeToString())


def test_task_routes_choose_the_queue(configured: pb_grpc.TaskServiceStub) -> None:
    result = _run(configured, pb.SubmitRequest(task="tasks.echo_request"))
    assert json.loads(result.result_json)["queue"] == "low-priority"


def test_an_explicit_queue_beats_the_route(configured: pb_grpc.TaskServiceStub) -> None:
    request = pb.SubmitRequest(task="tasks.echo_request", options=pb.SubmitOptions(queue="celery"))
    assert json.loads(_run(configured, request).result_json)["queue"] == "celery"


def test_an_undeclared_queue_is_invalid_argument(configured: pb_grpc.TaskServiceStub) -> None:
    request = pb.SubmitRequest(task="tasks.add", options=pb.SubmitOptions(queue="nowhere"))
    error = call_error(lambda: configured.Submit(request, timeout=10))
    assert violated_fields(error) == ["options.queue"]


def test_rate_limit_annotation_spaces_the_runs(configured: pb_grpc.TaskServiceStub) -> None:
    batch = pb.SubmitBatchRequest(
        requests=[pb.SubmitRequest(task="tasks.add", args_json=f"[{i}, {i}]") for i in range(7)]
    )
    ids = [item.task_id for item in configured.SubmitBatch(batch, timeout=10).results]
    for task_id in ids:
        request = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=20))
        assert configured.GetResult(request, timeout=30).ready
    done = sorted(
        configured.GetStatus(
            pb.GetStatusRequest(task_id=task_id), timeout=10
        ).date_done.ToDatetime()
        for task_id in ids
    )
    # 120/m lets one task start every 0.5 s. Celery's bucket lets the first few through
    # at once (one to three here), so seven runs span at least about 2 s; unlimited, they
    # all finish within milliseconds.
    assert (done[-1] - done[0]).total_seconds() >= 1.4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('task_serializer = "pickle"', "JSON only"),
        ('accept_content = ["json", "pickle"]', "JSON only"),
        ('result_backend = "rpc://"', "cannot serve a gateway"),
    ],
)
def test_the_gateway_refuses_unsafe_configuration_at_start(
    tmp_path: Path, redis_server: RedisServer, body: str, message: str
) -> None:
    env = _config_env(tmp_path, redis_server, body)
    env.pop("CELERY_RESULT_BACKEND")
    completed = subprocess.run(
        [sys.executable, "-m", "taskgate.server"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode != 0
    assert "configuration error" in completed.stderr
    assert message in completed.stderr


def test_the_worker_refuses_pickle_at_start(tmp_path: Path, redis_server: RedisServer) -> None:
    env = _config_env(tmp_path, redis_server, 'accept_content = ["pickle"]')
    worker = ManagedProcess(
        "pickle-worker", [sys.executable, "-m", "taskgate.worker"], env, tmp_path
    )
    assert worker.popen.wait(timeout=30) != 0
    assert "JSON only" in worker.log_text()
    worker.stop()
