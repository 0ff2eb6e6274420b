"""With the `otel` extra and TASKGATE_TRACING=otel, one trace runs caller -> gateway -> worker.

A real gateway and a real worker export their spans with the SDK's console exporter
(chosen by the standard OTEL_TRACES_EXPORTER) into their logs, where the test reads them.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.stack import Gateway, ManagedProcess, RedisServer, celery_env, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import managed, poll

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
_SPAN_START = re.compile(r'\{\s*"name": ')


def exported_spans(log_text: str) -> list[dict[str, Any]]:
    """The spans the console exporter wrote into a process's log (one JSON object each)."""
    decoder = json.JSONDecoder()
    spans = []
    for start in _SPAN_START.finditer(log_text):
        try:
            span, _ = decoder.raw_decode(log_text, start.start())
        except json.JSONDecodeError:
            continue  # still being written
        spans.append(span)
    return spans


def span_named(process: ManagedProcess, name: str, trace_id: str) -> dict[str, Any]:
    """The one span called `name` in `trace_id`, once the process has exported it."""
    found: list[dict[str, Any]] = []

    def exported() -> bool:
        found[:] = [
            span
            for span in exported_spans(process.log_text())
            if span["name"] == name and span["context"]["trace_id"] == f"0x{trace_id}"
        ]
        return bool(found)

    poll(exported, f"{process.name} exported span {name!r}")
    (span,) = found
    return span


@dataclass
class TracedStack:
    """A worker and a gateway tracing with OpenTelemetry."""

    worker: ManagedProcess
    gateway: Gateway
    stub: pb_grpc.TaskServiceStub


@pytest.fixture(scope="module")
def traced(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TracedStack]:
    log_dir = tmp_path_factory.mktemp("otel")
    url = redis_server.db_url(12)
    env = celery_env(
        url,
        url,
        TASKGATE_TRACING="otel",
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="taskgate-test",
        OTEL_BSP_SCHEDULE_DELAY="50",  # ms: export at once, so the test need not wait
    )
    # One pool process: the one Celery is instrumented in at its start.
    with (
        managed(start_worker(env, log_dir, concurrency=1)) as worker,
        managed(Gateway(env, log_dir)) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        yield TracedStack(worker, gateway, pb_grpc.TaskServiceStub(channel))


def test_the_tasks_span_continues_the_callers_trace_through_the_gateway(
    traced: TracedStack,
) -> None:
    request = pb.SubmitRequest(task="tasks.echo_request", args_json='["traceparent"]')
    reply = traced.stub.Execute(
        pb.ExecuteRequest(submit=request, wait=Duration(seconds=20)),
        metadata=(("traceparent", TRACEPARENT),),
        timeout=30,
    )
    message_parent = json.loads(reply.result_json)["headers"]["traceparent"]
    _, trace_id, producer_id, _ = message_parent.split("-")
    assert trace_id == TRACE_ID  # the caller's trace...
    assert producer_id != CALLER_SPAN_ID  # ...continued by the gateway's producer span

    server = span_named(traced.gateway, "/taskgate.v1.TaskService/Execute", TRACE_ID)
    producer = span_named(traced.gateway, "apply_async/tasks.echo_request", TRACE_ID)
    task = span_named(traced.worker, "run/tasks.echo_request", TRACE_ID)
    assert server["parent_id"] == f"0x{CALLER_SPAN_ID}"
    assert (producer["parent_id"], producer["kind"]) == (
        server["context"]["span_id"],
        "SpanKind.PRODUCER",
    )
    assert producer["context"]["span_id"] == f"0x{producer_id}"
    assert task["parent_id"] == f"0x{producer_id}"
    assert task["resource"]["attributes"]["service.name"] == "taskgate-test"


def test_a_refused_call_has_a_server_span_with_its_code(traced: TracedStack) -> None:
    other_trace = "5cf92f3577b34da6a3ce929d0e0e4737"
    request = pb.SubmitRequest(task="billing.charge")  # outside the catalog: NOT_FOUND
    with pytest.raises(grpc.RpcError) as raised:
        traced.stub.Submit(
            request,
            metadata=(("traceparent", f"00-{other_trace}-{CALLER_SPAN_ID}-01"),),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    span = span_named(traced.gateway, "/taskgate.v1.TaskService/Submit", other_trace)
    # NOT_FOUND is the caller's error, not the server's: OTel leaves the status unset.
    assert span["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_watch_streams_to_its_end_inside_its_server_span(traced: TracedStack) -> None:
    watch_trace = "6df92f3577b34da6a3ce929d0e0e4738"
    metadata = (("traceparent", f"00-{watch_trace}-{CALLER_SPAN_ID}-01"),)
    request = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
    task_id = traced.stub.Submit(request, timeout=10).task_id
    replies = list(
        traced.stub.WatchStatus(
            pb.WatchStatusRequest(task_id=task_id), metadata=metadata, timeout=20
        )
    )
    assert replies[-1].status.state == pb.TASK_STATE_SUCCESS
    span = span_named(traced.gateway, "/taskgate.v1.TaskService/WatchStatus", watch_trace)
    assert span["parent_id"] == f"0x{CALLER_SPAN_ID}"
