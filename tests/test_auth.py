"""Bearer tokens: who may call, which tasks each caller may submit, who may cancel."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.stack import Gateway, ManagedProcess, RedisServer
from taskgate.server.auth import digest
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error

ADMIN = "admin-token-0123456789abcdef"
ADDER = "adder-token-0123456789abcdef"


@dataclass
class Secured:
    """A gateway that requires tokens, and the log it writes."""

    stub: pb_grpc.TaskServiceStub
    channel: grpc.Channel
    gateway: Gateway


def _tokens_file(path: Path) -> Path:
    entries = [
        {"name": "admin", "sha256": digest(ADMIN).hex(), "tasks": ["*"], "cancel": True},
        {"name": "adder", "sha256": digest(ADDER).hex(), "tasks": ["tasks.add"]},
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
    stack_env: dict[str, str],
    worker: ManagedProcess,
    redis_server: RedisServer,
) -> Iterator[Secured]:
    log_dir = tmp_path_factory.mktemp("auth")
    env = {**stack_env, "TASKGATE_TOKENS_FILE": str(_tokens_file(log_dir / "tokens.json"))}
    gateway = Gateway(env, log_dir)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            yield Secured(pb_grpc.TaskServiceStub(channel), channel, gateway)
    finally:
        gateway.stop()


Metadata = tuple[tuple[str, str | bytes], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


ADD = pb.SubmitRequest(task="tasks.add", args_json="[2, 3]")


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        bearer("not-a-token"),
        (("authorization", ADMIN),),
        (("authorization", f"Basic {ADMIN}"),),
        bearer(ADMIN) + bearer(ADDER),
    ],
)
def test_without_a_valid_token_every_rpc_is_unauthenticated(
    secured: Secured, metadata: Metadata
) -> None:
    task_id = "7f3c8d6e-3b1f-4c7e-9a55-0d7e3f9e2b10"
    calls = [
        lambda: secured.stub.Submit(ADD, metadata=metadata, timeout=5),
        lambda: secured.stub.GetStatus(
            pb.GetStatusRequest(task_id=task_id), metadata=metadata, timeout=5
        ),
        lambda: secured.stub.ListTasks(pb.ListTasksRequest(), metadata=metadata, timeout=5),
        lambda: list(
            secured.stub.WatchStatus(
                pb.WatchStatusRequest(task_id=task_id), metadata=metadata, timeout=5
            )
        ),
    ]
    for call in calls:
        assert call_error(call).code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_valid_token_submits_what_it_may(secured: Secured) -> None:
    execute = pb.ExecuteRequest(submit=ADD, wait=Duration(seconds=20))
    response = secured.stub.Execute(execute, metadata=bearer(ADDER), timeout=30)
    assert response.result_json == "5"


def test_a_token_may_not_submit_other_tasks(secured: Secured) -> None:
    request = pb.SubmitRequest(task="tasks.sleep", args_json="[0]")
    error = call_error(lambda: secured.stub.Submit(request, metadata=bearer(ADDER), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert secured.stub.Submit(request, metadata=bearer(ADMIN), timeout=5).task_id


def test_a_batch_refuses_only_the_items_a_token_may_not_submit(secured: Secured) -> None:
    batch = pb.SubmitBatchRequest(requests=[ADD, pb.SubmitRequest(task="tasks.fail")])
    results = secured.stub.SubmitBatch(batch, metadata=bearer(ADDER), timeout=10).results
    assert results[0].task_id
    assert results[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]


def test_only_tokens_with_the_right_may_cancel(secured: Secured) -> None:
    task_id = secured.stub.Submit(ADD, metadata=bearer(ADDER), timeout=5).task_id
    cancel = pb.CancelRequest(task_id=task_id)
    error = call_error(lambda: secured.stub.Cancel(cancel, metadata=bearer(ADDER), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert secured.stub.Cancel(cancel, metadata=bearer(ADMIN), timeout=10).task_id == task_id


def test_list_tasks_shows_a_caller_only_what_it_may_submit(secured: Secured) -> None:
    listed = secured.stub.ListTasks(pb.ListTasksRequest(), metadata=bearer(ADDER), timeout=10)
    assert [task.name for task in listed.tasks] == ["tasks.add"]
    everything = secured.stub.ListTasks(pb.ListTasksRequest(), metadata=bearer(ADMIN), timeout=10)
    assert len(everything.tasks) > 1


def test_health_needs_no_token(secured: Secured) -> None:
    health: Any = health_pb2_grpc.HealthStub(secured.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tokens_never_reach_the_log(secured: Secured) -> None:
    call_error(lambda: secured.stub.Submit(ADD, metadata=bearer("leaky-wrong-token"), timeout=5))
    log = secured.gateway.log_text()
    for token in (ADMIN, ADDER, "leaky-wrong-token"):
        assert token not in log
