"""`/metrics` of a real gateway, scraped over HTTP after real calls, as a dashboard reads it.

The module's gateway has a Redis of its own and no worker, so that what it queues stays
queued: the queue length is then the count of what was submitted.
"""

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.stack import Gateway, RedisServer, celery_env
from taskgate.server.config import ObservabilitySettings
from taskgate.server.observability.grpc_names import go_code_name
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import poll
from tests.grpc_helpers import call_error
from tests.metrics_helpers import metrics_url, scrape, value
from tests.test_startup_errors import _run, assert_one_line_error

SERVICE = "taskgate.v1.TaskService"
ADD = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("metrics-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = celery_env(redis.url, redis.url, TASKGATE_METRICS_LISTEN="127.0.0.1:0")
    process = Gateway(env, tmp_path_factory.mktemp("metrics-gateway"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(gateway: Gateway) -> Iterator[pb_grpc.TaskServiceStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield pb_grpc.TaskServiceStub(channel)


def handled(samples: dict[Any, float], method: str, code: str, kind: str = "unary") -> float:
    return value(
        samples,
        "grpc_server_handled_total",
        grpc_type=kind,
        grpc_service=SERVICE,
        grpc_method=method,
        grpc_code=code,
    )


def test_grpc_series_move_by_the_calls_made_by_code(
    gateway: Gateway, stub: pb_grpc.TaskServiceStub
) -> None:
    url = metrics_url(gateway)
    before = scrape(url)
    stub.Submit(ADD, timeout=10)
    stub.Submit(ADD, timeout=10)
    unknown = pb.GetStatusRequest(task_id="00000000-0000-4000-8000-000000000000")
    assert call_error(lambda: stub.GetStatus(unknown, timeout=10)).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    bad = pb.SubmitRequest(task="tasks.add", args_json="[1,")
    assert call_error(lambda: stub.Submit(bad, timeout=10)).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    after = scrape(url)

    assert handled(after, "Submit", "OK") - handled(before, "Submit", "OK") == 2
    assert (
        handled(after, "Submit", "InvalidArgument") - handled(before, "Submit", "InvalidArgument")
        == 1
    )
    assert handled(after, "GetStatus", "NotFound") - handled(before, "GetStatus", "NotFound") == 1
    submit = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Submit"}
    for name, moved in [
        ("grpc_server_started_total", 3),
        ("grpc_server_msg_received_total", 3),
        ("grpc_server_msg_sent_total", 2),
        ("grpc_server_handling_seconds_count", 3),
    ]:
        assert value(after, name, **submit) - value(before, name, **submit) == moved, name
    assert value(after, "grpc_server_handling_seconds_bucket", le="0.005", **submit) >= 0
    assert (
        "grpc_server_handling_seconds_bucket",
        frozenset({**submit, "le": "0.075"}.items()),
    ) not in after


def test_a_stream_is_counted_as_server_stream_with_each_message(
    gateway: Gateway, stub: pb_grpc.TaskServiceStub
) -> None:
    url = metrics_url(gateway)
    task_id = stub.Submit(ADD, timeout=10).task_id
    before = scrape(url)
    stream = stub.WatchStatus(pb.WatchStatusRequest(task_id=task_id), timeout=30)
    assert next(stream).status.state == pb.TASK_STATE_PENDING
    open_now = scrape(url)
    assert value(open_now, "taskgate_watch_streams_open") == 1
    stream.cancel()
    watch = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "WatchStatus"}

    def ended() -> bool:
        samples = scrape(url)
        return handled(samples, "WatchStatus", "Canceled", "server_stream") > handled(
            before, "WatchStatus", "Canceled", "server_stream"
        )

    poll(ended, "the cancelled stream counted as Canceled")
    after = scrape(url)
    assert (
        value(after, "grpc_server_msg_sent_total", **watch)
        - value(before, "grpc_server_msg_sent_total", **watch)
        == 1
    )
    assert value(after, "taskgate_watch_streams_open") == 0


def grown(before: Any, after: Any, name: str, **labels: str) -> float:
    """How much the series `name` with `labels` grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def test_taskgate_series_count_submissions_replays_and_waits(
    gateway: Gateway, stub: pb_grpc.TaskServiceStub
) -> None:
    url = metrics_url(gateway)
    before = scrape(url)
    keyed = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]", idempotency_key="metrics-1")
    task_id = stub.Submit(keyed, timeout=10).task_id
    assert stub.Submit(keyed, timeout=10).deduplicated
    outside = pb.SubmitRequest(task="billing.charge")
    assert call_error(lambda: stub.Submit(outside, timeout=10)).code() == grpc.StatusCode.NOT_FOUND
    waiting = threading.Thread(
        target=stub.GetResult,
        args=(pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=3)),),
        kwargs={"timeout": 10},
    )
    waiting.start()
    poll(lambda: value(scrape(url), "taskgate_waits_in_progress") == 1, "a wait in progress")
    waiting.join()
    after = scrape(url)

    submitted = "taskgate_tasks_submitted_total"
    assert grown(before, after, submitted, task="tasks.add", outcome="queued") == 1
    assert grown(before, after, submitted, task="tasks.add", outcome="deduplicated") == 1
    assert grown(before, after, submitted, task="unknown", outcome="NotFound") == 1
    assert grown(before, after, "taskgate_publish_seconds_count") == 1
    assert value(after, "taskgate_waits_in_progress") == 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_each_item_of_a_batch_counts_as_a_submission(
    gateway: Gateway, stub: pb_grpc.TaskServiceStub
) -> None:
    """Items published together count one by one, as Submits do, refused ones too."""
    url = metrics_url(gateway)
    before = scrape(url)
    good = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")
    keyed = pb.SubmitRequest(task="tasks.add", args_json="[1, 2]", idempotency_key="metrics-b")
    outside = pb.SubmitRequest(task="billing.charge")
    batch = pb.SubmitBatchRequest(requests=[good, good, keyed, outside, good])
    outcomes = [r.WhichOneof("outcome") for r in stub.SubmitBatch(batch, timeout=10).results]
    assert outcomes == ["task_id", "task_id", "task_id", "error", "task_id"]
    after = scrape(url)

    submitted = "taskgate_tasks_submitted_total"
    assert grown(before, after, submitted, task="tasks.add", outcome="queued") == 4
    assert grown(before, after, submitted, task="unknown", outcome="NotFound") == 1
    assert grown(before, after, "taskgate_publish_seconds_count") == 4


def test_requests_over_a_size_limit_count_as_size_limits_of_their_caller(
    gateway: Gateway, stub: pb_grpc.TaskServiceStub
) -> None:
    url = metrics_url(gateway)
    before = scrape(url)
    over_rpc_cap = pb.GetStatusRequest(task_id="x" * 100_000)  # a valid one is at most 4 KiB
    assert call_error(lambda: stub.GetStatus(over_rpc_cap, timeout=10)).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    over_message_cap = pb.SubmitRequest(task="tasks.add", args_json="[" + "1," * 2_500_000 + "1]")
    assert call_error(lambda: stub.Submit(over_message_cap, timeout=10)).code() == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    after = scrape(url)
    size = {"kind": "size", "caller": "ipv4:127.0.0.1"}
    hits = "taskgate_limits_hit_total"
    assert value(after, hits, **size) - value(before, hits, **size) == 2
    # As the caller saw it, not as the gateway's handler did (it received nothing).
    exhausted = handled(after, "Submit", "ResourceExhausted") - handled(
        before, "Submit", "ResourceExhausted"
    )
    assert exhausted == 1


def test_queue_length_sums_every_priority_list(
    gateway: Gateway, stub: pb_grpc.TaskServiceStub, redis: RedisServer
) -> None:
    url = metrics_url(gateway)
    for priority in (0, 0, 4, 7, 9):
        options = pb.SubmitOptions(priority=priority)
        stub.Submit(pb.SubmitRequest(task="tasks.add", args_json="[1, 2]", options=options))
    with redis.client() as client:
        lists: dict[bytes, int] = {
            key: int(client.llen(key))
            for key in client.keys("celery*")
            if client.type(key) == b"list"
        }
    assert len([key for key, length in lists.items() if length]) >= 3, lists  # several lists
    queued = sum(lists.values())

    def counted() -> bool:
        return value(scrape(url), "celery_queue_length", queue_name="celery") == queued

    poll(counted, f"celery_queue_length == {queued} ({lists})", timeout=15)


def test_empty_metrics_listen_serves_none_and_a_taken_port_stops_the_start(
    redis: RedisServer, tmp_path: Path
) -> None:
    off = Gateway(celery_env(redis.url, redis.url, TASKGATE_METRICS_LISTEN=""), tmp_path)
    try:
        assert "metrics off" in off.log_text()
    finally:
        off.stop()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        env = celery_env(redis.url, redis.url, TASKGATE_METRICS_LISTEN=taken)
        finished = _run([sys.executable, "-m", "taskgate.server"], env)
    assert_one_line_error(finished, f"TASKGATE_METRICS_LISTEN={taken!r}", "Address already in use")
    bad = celery_env(redis.url, redis.url, TASKGATE_METRICS_LISTEN="9464")
    assert_one_line_error(
        _run([sys.executable, "-m", "taskgate.server"], bad), "TASKGATE_METRICS_LISTEN"
    )


def test_metrics_are_on_by_default_on_loopback_9464() -> None:
    assert ObservabilitySettings.from_env({}).metrics_listen == "127.0.0.1:9464"
    assert ObservabilitySettings.from_env({"TASKGATE_METRICS_LISTEN": ""}).metrics_listen is None


def test_codes_are_spelled_as_go_grpc_prometheus_writes_them() -> None:
    # Go's codes.Code.String(), in code order: what gRPC dashboards filter on.
    go = "OK Canceled Unknown InvalidArgument DeadlineExceeded NotFound AlreadyExists "
    go += "PermissionDenied ResourceExhausted FailedPrecondition Aborted OutOfRange "
    go += "Unimplemented Internal Unavailable DataLoss Unauthenticated"
    assert [go_code_name(number) for number in range(17)] == go.split()
