"""A caller's W3C `traceparent` and `tracestate` reach the task's message headers, with no
tracing library at work (TASKGATE_TRACING off, the default); an invalid one is dropped."""

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.stack import REPO_ROOT, Gateway, ManagedProcess
from taskgate.server.observability.tracing import parse_traceparent, trace_context
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
ECHO = pb.SubmitRequest(task="tasks.echo_request", args_json='["traceparent", "tracestate"]')
WAIT = Duration(seconds=20)

Metadata = tuple[tuple[str, str], ...]


def _result_headers(stub: pb_grpc.TaskServiceStub, task_id: str) -> dict[str, Any]:
    reply = stub.GetResult(pb.GetResultRequest(task_id=task_id, wait=WAIT), timeout=30)
    assert reply.ready, reply
    headers: dict[str, Any] = json.loads(reply.result_json)["headers"]
    return headers


def _submit(stub: pb_grpc.TaskServiceStub, metadata: Metadata) -> str:
    return stub.Submit(ECHO, metadata=metadata, timeout=10).task_id


def _submit_keyed(stub: pb_grpc.TaskServiceStub, metadata: Metadata) -> str:
    keyed = pb.SubmitRequest(idempotency_key=str(uuid.uuid4()))
    keyed.MergeFrom(ECHO)
    return stub.Submit(keyed, metadata=metadata, timeout=10).task_id


def _execute(stub: pb_grpc.TaskServiceStub, metadata: Metadata) -> str:
    request = pb.ExecuteRequest(submit=ECHO, wait=WAIT)
    return stub.Execute(request, metadata=metadata, timeout=30).task_id


def _batch(stub: pb_grpc.TaskServiceStub, metadata: Metadata) -> str:
    reply = stub.SubmitBatch(pb.SubmitBatchRequest(requests=[ECHO]), metadata=metadata, timeout=10)
    return reply.results[0].task_id


SUBMITS: dict[str, Callable[[pb_grpc.TaskServiceStub, Metadata], str]] = {
    "Submit": _submit,
    "Submit with an idempotency key": _submit_keyed,
    "Execute": _execute,
    "SubmitBatch": _batch,
}


@pytest.mark.parametrize("how", sorted(SUBMITS))
def test_the_callers_trace_context_reaches_the_task(
    stub: pb_grpc.TaskServiceStub, how: str
) -> None:
    metadata = (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE))
    task_id = SUBMITS[how](stub, metadata)
    assert _result_headers(stub, task_id) == {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}


INVALID = [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # the forbidden version
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # v00 has 4 fields
    "not a traceparent",
]


@pytest.mark.parametrize("value", INVALID)
def test_an_invalid_traceparent_is_dropped_and_the_call_succeeds(
    stub: pb_grpc.TaskServiceStub, value: str
) -> None:
    task_id = _submit(stub, (("traceparent", value), ("tracestate", TRACESTATE)))
    assert _result_headers(stub, task_id) == {"traceparent": None, "tracestate": None}


def test_a_later_version_may_carry_more_fields() -> None:
    later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next"
    assert parse_traceparent(later) == later


def test_repeated_tracestate_headers_join_and_an_oversized_one_is_dropped() -> None:
    joined = trace_context(
        [("traceparent", TRACEPARENT), ("tracestate", "a=1"), ("tracestate", "b=2")]
    )
    assert joined is not None
    assert joined.headers() == {"traceparent": TRACEPARENT, "tracestate": "a=1,b=2"}
    oversized = trace_context([("traceparent", TRACEPARENT), ("tracestate", "a=" + "x" * 600)])
    assert oversized is not None
    assert oversized.headers() == {"traceparent": TRACEPARENT}


def test_two_traceparents_are_ambiguous_and_dropped() -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-00"
    assert trace_context([("traceparent", TRACEPARENT), ("traceparent", other)]) is None


def test_no_traceparent_adds_no_header(stub: pb_grpc.TaskServiceStub) -> None:
    task_id = _submit(stub, ())
    assert _result_headers(stub, task_id) == {"traceparent": None, "tracestate": None}


def _without_opentelemetry(env: dict[str, str], directory: Path) -> dict[str, str]:
    """`env` in which `import opentelemetry` fails, as where the otel extra is not installed."""
    blocker = directory / "opentelemetry"
    blocker.mkdir()
    (blocker / "__init__.py").write_text('raise ImportError("no opentelemetry here")\n')
    return {**env, "PYTHONPATH": str(directory)}


def test_pass_through_needs_no_tracing_library(
    stack_env: dict[str, str], worker: ManagedProcess, tmp_path: Path
) -> None:
    env = _without_opentelemetry(stack_env, tmp_path)
    gateway = Gateway(env, tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            task_id = _submit(stub, (("traceparent", TRACEPARENT),))
            assert _result_headers(stub, task_id)["traceparent"] == TRACEPARENT
    finally:
        gateway.stop()
    refused = subprocess.run(
        [sys.executable, "-m", "taskgate.server"],
        env={**env, "TASKGATE_TRACING": "otel", "TASKGATE_LISTEN": "127.0.0.1:0"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "taskgate: configuration error: TASKGATE_TRACING=otel needs the otel extra: "
        "pip install 'taskgate[otel]'"
    )
