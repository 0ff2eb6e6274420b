"""JSON logs and the access log, read from a real gateway's and a real worker's output.

One stack for the module: a worker and a gateway with `TASKGATE_LOG_FORMAT=json` and a
tokens file, on a Redis database of their own.
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.stack import Gateway, ManagedProcess, RedisServer, celery_env, start_worker
from taskgate.server.auth import digest
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import managed, poll
from tests.grpc_helpers import call_error

TOKEN = "billing-s3cret-0123456789abcdef"
WRONG_TOKEN = "wrong-s3cret-fedcba9876543210"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class JsonStack:
    """A JSON-logging worker and gateway, and a client for the gateway."""

    worker: ManagedProcess
    gateway: Gateway
    stub: pb_grpc.TaskServiceStub

    def access_lines(self) -> list[dict[str, Any]]:
        """Every access-log line the gateway wrote so far, parsed."""
        lines = [json.loads(line) for line in self.gateway.log_text().splitlines()]
        return [line for line in lines if line["logger"] == "taskgate.access"]

    def access_line(self, rpc: str, task_id: str) -> dict[str, Any]:
        """The access-log line of the `rpc` call about `task_id`, once it is written."""
        found: list[dict[str, Any]] = []

        def written() -> bool:
            found[:] = [
                line
                for line in self.access_lines()
                if line["rpc"] == rpc and task_id in line.get("task_ids", [])
            ]
            return bool(found)

        poll(written, f"the access-log line of {rpc} {task_id}")
        (line,) = found
        return line


@pytest.fixture(scope="module")
def json_stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JsonStack]:
    log_dir = tmp_path_factory.mktemp("json-logs")
    tokens = log_dir / "tokens.json"
    entry = {"name": "billing", "sha256": digest(TOKEN).hex(), "tasks": ["tasks.*"]}
    tokens.write_text(json.dumps({"tokens": [entry]}))
    url = redis_server.db_url(11)
    env = celery_env(url, url, TASKGATE_LOG_FORMAT="json", TASKGATE_TOKENS_FILE=str(tokens))
    with (
        managed(start_worker(env, log_dir)) as worker,
        managed(Gateway(env, log_dir)) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        yield JsonStack(worker, gateway, pb_grpc.TaskServiceStub(channel))


def test_a_submit_is_one_json_line_with_its_task_id_caller_and_peer(json_stack: JsonStack) -> None:
    request = pb.SubmitRequest(task="tasks.add", args_json="[2, 3]")
    metadata = (*AUTH, ("traceparent", TRACEPARENT))
    task_id = json_stack.stub.Submit(request, metadata=metadata, timeout=10).task_id
    line = json_stack.access_line("Submit", task_id)
    assert {key: line[key] for key in ("level", "code", "task", "caller", "trace_id")} == {
        "level": "INFO",
        "code": "OK",
        "task": "tasks.add",
        "caller": "billing",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert line["task_ids"] == [task_id]
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert datetime.fromisoformat(line["time"]).tzinfo is not None  # ISO 8601, with its zone


def test_a_refused_and_a_failed_call_are_logged_with_their_codes(json_stack: JsonStack) -> None:
    unknown = str(uuid.uuid4())
    request = pb.GetStatusRequest(task_id=unknown)
    error = call_error(lambda: json_stack.stub.GetStatus(request, metadata=AUTH, timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert json_stack.access_line("GetStatus", unknown)["code"] == "NOT_FOUND"

    # Refused before its request is read: the line has no task id, and no caller name.
    def refusals() -> list[dict[str, Any]]:
        lines = json_stack.access_lines()
        return [line for line in lines if line["code"] == "UNAUTHENTICATED"]

    before = len(refusals())
    wrong = (("authorization", f"Bearer {WRONG_TOKEN}"),)
    error = call_error(lambda: json_stack.stub.GetStatus(request, metadata=wrong, timeout=10))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    poll(lambda: len(refusals()) == before + 1, "one UNAUTHENTICATED line")
    line = refusals()[-1]
    assert (line["rpc"], line["caller"], "task_ids" in line) == ("GetStatus", "-", False)


def test_a_batch_line_counts_its_items_and_names_their_ids(json_stack: JsonStack) -> None:
    items = [pb.SubmitRequest(task="tasks.add", args_json="[1, 1]")] * 3
    items.append(pb.SubmitRequest(task="", args_json="[]"))  # refused on its own
    reply = json_stack.stub.SubmitBatch(
        pb.SubmitBatchRequest(requests=items), metadata=AUTH, timeout=10
    )
    queued = [result.task_id for result in reply.results if result.task_id]
    line = json_stack.access_line("SubmitBatch", queued[0])
    assert (line["code"], line["task_count"], line["task_ids"]) == ("OK", 4, queued)


def test_a_watch_is_logged_once_when_its_stream_ends(json_stack: JsonStack) -> None:
    task_id = json_stack.stub.Submit(
        pb.SubmitRequest(task="tasks.add", args_json="[4, 4]"), metadata=AUTH, timeout=10
    ).task_id
    replies = list(
        json_stack.stub.WatchStatus(
            pb.WatchStatusRequest(task_id=task_id), metadata=AUTH, timeout=20
        )
    )
    assert replies[-1].status.state == pb.TASK_STATE_SUCCESS
    assert json_stack.access_line("WatchStatus", task_id)["code"] == "OK"


def test_every_line_of_gateway_and_worker_is_json_and_no_token_is_logged(
    json_stack: JsonStack,
) -> None:
    wrong = (("authorization", f"Bearer {WRONG_TOKEN}"),)
    json_stack.stub.Execute(
        pb.ExecuteRequest(
            submit=pb.SubmitRequest(task="tasks.add", args_json="[5, 5]"), wait=Duration(seconds=10)
        ),
        metadata=AUTH,
        timeout=20,
    )
    call_error(lambda: json_stack.stub.ListTasks(pb.ListTasksRequest(), metadata=wrong, timeout=10))
    poll(lambda: "ListTasks" in json_stack.gateway.log_text(), "the refused ListTasks logged")
    gateway_lines = json_stack.gateway.log_text().splitlines()
    for text in gateway_lines:
        line = json.loads(text)
        assert {"time", "level", "logger", "message"} <= line.keys(), text
    # Celery prints its banner (not a log line) while it starts; from "ready." on, every
    # line is a log line, in JSON.
    worker_text = json_stack.worker.log_text()
    worker_lines = worker_text.splitlines()
    ready = next(n for n, text in enumerate(worker_lines) if " ready." in text)
    worker_lines = worker_lines[ready:]
    assert any("succeeded" in json.loads(text)["message"] for text in worker_lines)
    for text in worker_lines:
        assert {"time", "level", "logger", "message"} <= json.loads(text).keys(), text
    assert "[5, 5]" not in worker_text  # a task's arguments are not logged
    for secret in (TOKEN, WRONG_TOKEN, "s3cret"):
        assert secret not in json_stack.gateway.log_text()
        assert secret not in worker_text


def test_access_log_off_keeps_the_other_lines_and_the_trace_context(
    json_stack: JsonStack, redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.db_url(11)  # json_stack's worker runs the task
    gateway = Gateway(celery_env(url, url, TASKGATE_ACCESS_LOG="off"), tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            request = pb.GetStatusRequest(task_id=str(uuid.uuid4()))
            assert call_error(lambda: stub.GetStatus(request, timeout=10)).code() == (
                grpc.StatusCode.NOT_FOUND
            )
            echo = pb.SubmitRequest(task="tasks.echo_request", args_json='["traceparent"]')
            reply = stub.Execute(
                pb.ExecuteRequest(submit=echo, wait=Duration(seconds=10)),
                metadata=(("traceparent", TRACEPARENT),),
                timeout=20,
            )
    finally:
        gateway.stop()
    assert json.loads(reply.result_json)["headers"] == {"traceparent": TRACEPARENT}
    text = gateway.log_text()
    assert "stopping: calls in flight" in text  # plain text, and logged to the end
    assert "taskgate.access" not in text
    assert "GetStatus" not in text
