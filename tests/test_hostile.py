"""Hostile input from every side: the broker's queue, every RPC, the raw port, a stream flood.

(a) A message on the broker that is not JSON is refused by the worker and never run.
(b) Random and malformed requests to every RPC get a documented status code, never
    UNKNOWN or INTERNAL, and the gateway keeps serving.
(c) Garbage bytes on the gRPC port leave the gateway serving, and its sockets are closed.
(d) Two thousand streams held and dropped leave no subscription and no thread behind.
"""

import asyncio
import pickle
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis as AsyncRedis

from scripts.stack import (
    REPO_ROOT,
    Gateway,
    ManagedProcess,
    RedisServer,
    celery_env,
    purge_queue,
    start_worker,
    wait_until,
)
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests import hostile_strategies as hs
from tests.hostile_helpers import (
    CELERY_QUEUE,
    PREFACE,
    REQUEST_TYPES,
    CreatesFileWhenUnpickled,
    answer,
    connections_on,
    decodes,
    garbage,
    publish_raw_task,
    send_raw,
    stays_false,
    thread_count,
    throw,
)
from tests.support_tasks import RUNS_PREFIX

RESULT_PREFIX = "celery-task-meta-"
CALL_TIMEOUT = 5.0


def _round_trip(channel: grpc.Channel) -> float:
    """Submit tasks.add(2, 3) and read its result; the seconds it took."""
    stub = pb_grpc.TaskServiceStub(channel)
    started = time.monotonic()
    task_id = stub.Submit(
        pb.SubmitRequest(task="tasks.add", args_json="[2, 3]"), timeout=10
    ).task_id
    wait = pb.GetResultRequest(task_id=task_id, wait=Duration(seconds=10))
    result = stub.GetResult(wait, timeout=20)
    assert (result.ready, result.result_json) == (True, "5")
    return time.monotonic() - started


def _assert_serving(channel: grpc.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- (a) the broker accepts JSON only ---------------------------------------------------


@dataclass(frozen=True)
class PrivateBroker:
    """A redis-server of its own and a worker that also runs tests.count_run."""

    redis: RedisServer
    worker: ManagedProcess

    def runs(self, key: str) -> int | None:
        """How often tests.count_run(key) ran; None if never."""
        with self.redis.client() as client:
            raw = client.get(RUNS_PREFIX + key)
        return None if raw is None else int(raw)


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    log_dir = tmp_path_factory.mktemp("hostile-broker")
    server = RedisServer(log_dir)
    env = celery_env(
        server.url,
        server.url,
        TASKGATE_TASK_MODULES="taskgate.worker.tasks,tests.support_tasks",
        PYTHONPATH=str(REPO_ROOT),
    )
    try:
        worker = start_worker(env, log_dir)
        yield PrivateBroker(server, worker)
        worker.stop()
    finally:
        server.stop()


def _run_control(broker: PrivateBroker) -> None:
    """A JSON message sent the same way runs; queued behind the hostile one, it runs after."""
    key = f"control-{uuid.uuid4()}"
    publish_raw_task(broker.redis.url, "tests.count_run", [key], serializer="json")
    wait_until(lambda: broker.runs(key) == 1, "the JSON control message", timeout=20)


def _assert_discarded(broker: PrivateBroker, task_id: str) -> None:
    """The message is neither queued nor held unacknowledged for a redelivery."""
    with broker.redis.client() as client:

        def gone() -> bool:
            held = client.hvals("unacked")
            return client.llen(CELERY_QUEUE) == 0 and not any(task_id.encode() in h for h in held)

        wait_until(gone, "the broker to drop the refused message", timeout=10)
        assert client.get(RESULT_PREFIX + task_id) is None


def _assert_refusal_logged(worker: ManagedProcess, body_text: str, serializer: str) -> None:
    """The worker logged that it refused the message whose body holds `body_text`."""
    wait_until(lambda: body_text in worker.log_text(), "the worker's refusal")
    log = worker.log_text()
    entry = log[: log.index(body_text)][-1000:]  # the body is dumped after the reason
    assert f"Refusing to deserialize untrusted content of type {serializer}" in entry, entry


@pytest.mark.parametrize("serializer", ["pickle", "yaml"])
def test_a_task_message_that_is_not_json_is_refused_and_never_runs(
    private_broker: PrivateBroker, serializer: str
) -> None:
    key = f"hostile-{serializer}-{uuid.uuid4()}"
    task_id = publish_raw_task(
        private_broker.redis.url, "tests.count_run", [key], serializer=serializer
    )
    _run_control(private_broker)
    assert stays_false(lambda: private_broker.runs(key) is not None, seconds=2)
    _assert_refusal_logged(private_broker.worker, key, serializer)
    _assert_discarded(private_broker, task_id)


def test_a_pickle_that_runs_code_when_loaded_is_never_loaded(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    payload = CreatesFileWhenUnpickled(marker)
    pickle.loads(pickle.dumps(payload))  # the control: loading it creates the file
    assert marker.exists()
    marker.unlink()
    task_id = publish_raw_task(
        private_broker.redis.url, "tests.count_run", [payload], serializer="pickle"
    )
    _run_control(private_broker)
    assert stays_false(marker.exists, seconds=2)
    _assert_refusal_logged(private_broker.worker, str(marker), "pickle")
    _assert_discarded(private_broker, task_id)


# --- (b) random and malformed requests to every RPC -----------------------------------


@pytest.fixture(scope="module")
def void_queue(redis_server: RedisServer) -> Iterator[str]:
    """The queue no worker reads; emptied at the end of the module."""
    yield hs.VOID_QUEUE
    with redis_server.client() as client:
        purge_queue(client, hs.VOID_QUEUE)


@dataclass(frozen=True)
class KnownIds:
    """Ids of real tasks, one in each interesting state."""

    succeeded: str
    failed: str
    pending: str
    revoked: str
    ignores_result: str
    to_cancel: str

    def everything(self) -> list[str]:
        return [self.succeeded, self.failed, self.pending, self.revoked, self.ignores_result]

    def cancellable(self) -> list[str]:
        # A pending task of its own, so that `pending` stays pending for the other tests.
        # Cancel of an ignore_result task is pinned in test_hostile_inputs.py.
        return [self.succeeded, self.failed, self.to_cancel, self.revoked]


@pytest.fixture(scope="module")
def known_ids(stub: pb_grpc.TaskServiceStub, void_queue: str) -> KnownIds:
    def run(task: str, args: str) -> str:
        execute = pb.ExecuteRequest(
            submit=pb.SubmitRequest(task=task, args_json=args), wait=Duration(seconds=20)
        )
        reply = stub.Execute(execute, timeout=30)
        assert reply.ready
        return reply.task_id

    def queue(task: str) -> str:
        request = pb.SubmitRequest(
            task=task, args_json="[1, 2]", options=pb.SubmitOptions(queue=void_queue)
        )
        return stub.Submit(request, timeout=10).task_id

    stub.ListTasks(pb.ListTasksRequest(), timeout=10)  # the gateway knows which ignore results
    revoked = queue("tasks.add")
    stub.Cancel(pb.CancelRequest(task_id=revoked), timeout=10)
    return KnownIds(
        succeeded=run("tasks.add", "[1, 2]"),
        failed=run("tasks.fail", '["hostile"]'),
        pending=queue("tasks.add"),
        revoked=revoked,
        ignores_result=queue("tasks.subtraction"),
        to_cancel=queue("tasks.add"),
    )


def _assert_documented(rpc: str, call: Callable[[], object]) -> None:
    code, details = answer(call)
    event(code.name)  # the spread of answers, in --hypothesis-show-statistics
    assert code in hs.DOCUMENTED[rpc], f"{rpc} answered {code.name}: {details[:300]}"


def _examples(count: int) -> settings:
    # No example database: nothing is written into the repository. The `unharmed`
    # fixture is function-scoped on purpose: it checks the gateway after all examples.
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
    )


@pytest.fixture
def still_serving(gateway: Gateway, channel: grpc.Channel) -> Iterator[None]:
    """After the test: the session's gateway runs and says SERVING."""
    yield
    assert gateway.alive()
    _assert_serving(channel)


@pytest.fixture
def unharmed(gateway: Gateway, still_serving: None) -> Iterator[None]:
    """After the test: the gateway still serves, and logged no unexpected error."""
    logged = len(gateway.log_text())
    yield
    new_log = gateway.log_text()[logged:]
    assert "unexpected error" not in new_log, new_log[-3000:]
    assert "Traceback" not in new_log, new_log[-3000:]


@pytest.mark.usefixtures("unharmed", "void_queue")
@_examples(150)
@given(request=hs.submit_requests())
def test_submit_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, request: pb.SubmitRequest
) -> None:
    _assert_documented("Submit", lambda: stub.Submit(request, timeout=CALL_TIMEOUT))


@pytest.mark.usefixtures("unharmed", "void_queue")
@_examples(60)
@given(submit=hs.submit_requests(), wait=hs.waits, propagate=st.booleans())
def test_execute_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, submit: pb.SubmitRequest, wait: Duration | None, propagate: bool
) -> None:
    request = pb.ExecuteRequest(submit=submit, wait=wait, propagate=propagate)
    _assert_documented("Execute", lambda: stub.Execute(request, timeout=0.5))


_CODES = {code.value[0]: code for code in grpc.StatusCode}


@pytest.mark.usefixtures("unharmed", "void_queue")
@_examples(60)
@given(requests=st.lists(hs.submit_requests(), max_size=5))
def test_submit_batch_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, requests: list[pb.SubmitRequest]
) -> None:
    batch = pb.SubmitBatchRequest(requests=requests)
    replies: list[pb.SubmitBatchResponse] = []
    _assert_documented(
        "SubmitBatch", lambda: replies.append(stub.SubmitBatch(batch, timeout=CALL_TIMEOUT))
    )
    for reply in replies:
        assert len(reply.results) == len(requests)
        for item in reply.results:
            if item.WhichOneof("outcome") == "error":
                code = _CODES[item.error.code]
                assert code in hs.DOCUMENTED["Submit"] - {grpc.StatusCode.OK}, item.error


@pytest.mark.usefixtures("unharmed")
@_examples(100)
@given(data=st.data())
def test_get_status_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, known_ids: KnownIds, data: st.DataObject
) -> None:
    request = pb.GetStatusRequest(task_id=data.draw(hs.task_ids(known_ids.everything())))
    _assert_documented("GetStatus", lambda: stub.GetStatus(request, timeout=CALL_TIMEOUT))


@pytest.mark.usefixtures("unharmed")
@_examples(100)
@given(data=st.data(), deadline=hs.deadline(0.5))
def test_get_result_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, known_ids: KnownIds, data: st.DataObject, deadline: float
) -> None:
    request = pb.GetResultRequest(
        task_id=data.draw(hs.task_ids(known_ids.everything())),
        wait=data.draw(hs.waits),
        propagate=data.draw(st.booleans()),
    )
    _assert_documented("GetResult", lambda: stub.GetResult(request, timeout=deadline))


@pytest.mark.usefixtures("unharmed")
@_examples(100)
@given(data=st.data(), terminate=st.booleans())
def test_cancel_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, known_ids: KnownIds, data: st.DataObject, terminate: bool
) -> None:
    task_id = data.draw(hs.task_ids(known_ids.cancellable()))
    request = pb.CancelRequest(task_id=task_id, terminate=terminate)
    _assert_documented("Cancel", lambda: stub.Cancel(request, timeout=CALL_TIMEOUT))


@pytest.mark.usefixtures("unharmed")
@_examples(60)
@given(data=st.data(), deadline=hs.deadline(0.3))
def test_watch_status_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, known_ids: KnownIds, data: st.DataObject, deadline: float
) -> None:
    request = pb.WatchStatusRequest(task_id=data.draw(hs.task_ids(known_ids.everything())))
    _assert_documented("WatchStatus", lambda: list(stub.WatchStatus(request, timeout=deadline)))


@pytest.mark.usefixtures("unharmed")
@_examples(20)
@given(deadline=hs.deadline(2.0))
def test_list_tasks_answers_only_documented_codes(
    stub: pb_grpc.TaskServiceStub, deadline: float
) -> None:
    _assert_documented("ListTasks", lambda: stub.ListTasks(pb.ListTasksRequest(), timeout=deadline))


@pytest.mark.usefixtures("still_serving")
@_examples(150)
@given(rpc=st.sampled_from(sorted(REQUEST_TYPES)), body=st.binary(max_size=300))
def test_random_bytes_as_a_request_are_answered_with_documented_codes(
    channel: grpc.Channel, rpc: str, body: bytes
) -> None:
    assume(b"tasks." not in body)  # nothing random may reach the session's worker
    code, details = answer(lambda: send_raw(channel, rpc, body, timeout=0.5))
    event(f"{'decodable' if decodes(rpc, body) else 'undecodable'}: {code.name}")
    assert code in hs.DOCUMENTED[rpc], f"{rpc} answered {code.name}: {details[:300]}"
    if not decodes(rpc, body):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details


# --- (c) garbage bytes on the gRPC port ------------------------------------------------

IDLE_CONNECTIONS = 200
GARBAGE_ROUNDS = 10


@pytest.fixture(scope="module")
def spare_gateway(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str], worker: ManagedProcess
) -> Iterator[Gateway]:
    """A gateway of this module's own, so that its threads and sockets are its alone.

    Its concurrency limit leaves room for ten calls beside the stream flood of (d).
    """
    env = {
        **stack_env,
        "TASKGATE_MAX_CONCURRENT_CALLS": str(STREAMS + 10),
        "TASKGATE_MAX_CALLS_PER_CALLER": str(STREAMS + 10),
    }
    gateway = Gateway(env, tmp_path_factory.mktemp("hostile-gateway"))
    yield gateway
    gateway.stop()


def test_garbage_on_the_grpc_port_leaves_the_gateway_serving(spare_gateway: Gateway) -> None:
    pid = spare_gateway.popen.pid
    with grpc.insecure_channel(spare_gateway.address) as channel:
        _round_trip(channel)
        gateway_port = int(spare_gateway.address.rpartition(":")[2])
        before = connections_on(pid, gateway_port)
        rng = random.Random(20261125)
        throws = [
            (payload, index % 2 == 0) for index in range(GARBAGE_ROUNDS) for payload in garbage(rng)
        ]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda job: throw(spare_gateway.address, job[0], abort=job[1]), throws))
        host, _, port = spare_gateway.address.rpartition(":")
        idle = [
            socket.create_connection((host, int(port)), timeout=5) for _ in range(IDLE_CONNECTIONS)
        ]
        try:
            for sock in idle[::2]:
                sock.sendall(PREFACE[:5])  # stuck half-way through the preface
            assert _round_trip(channel) < 5.0, "a real client waited behind idle connections"
        finally:
            for sock in idle:
                sock.close()
        assert spare_gateway.alive()
        _assert_serving(channel)
        wait_until(
            lambda: connections_on(pid, gateway_port) <= before + 5,
            f"the gateway to close its connections ({connections_on(pid, gateway_port)} held, "
            f"{before} before)",
            timeout=20,
        )
        _round_trip(channel)


# --- (d) thousands of streams held, then dropped --------------------------------------

STREAMS = 2000
WatchCall = grpc.aio.UnaryStreamCall[pb.WatchStatusRequest, pb.WatchStatusResponse]
STREAM_CHANNELS = 4
WAVE = 250
SPARE_THREADS = 5


async def _numsub(client: AsyncRedis, channel: str) -> int:
    counts = await client.pubsub_numsub(channel)
    return int(counts[0][1])


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 15.0
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen within 15s"
        await asyncio.sleep(0.05)


async def _open_streams(
    stubs: list["pb_grpc.TaskServiceAsyncStub"], task_id: str, count: int, wave: int = WAVE
) -> list[WatchCall]:
    """`count` WatchStatus calls, each past its first message (the task's PENDING state).

    They are opened `wave` at a time: a burst of thousands at once is its own test
    (test_hostile_inputs.py), because grpc drops part of it.
    """
    request = pb.WatchStatusRequest(task_id=task_id)
    calls: list[WatchCall] = []
    states: set[str] = set()
    while len(calls) < count:
        opened = [
            stubs[i % len(stubs)].WatchStatus(request, timeout=120)
            for i in range(min(wave, count - len(calls)))
        ]
        calls += opened
        firsts = await asyncio.wait_for(asyncio.gather(*(call.read() for call in opened)), 30)
        states.update(
            first.status.state_name if isinstance(first, pb.WatchStatusResponse) else repr(first)
            for first in firsts
        )
    assert states == {"PENDING"}
    return calls


async def _flood(gateway: Gateway, redis_url: str, task_id: str) -> None:
    pid = gateway.popen.pid
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own each
    channels = [
        grpc.aio.insecure_channel(gateway.address, options=options) for _ in range(STREAM_CHANNELS)
    ]
    stubs = [pb_grpc.TaskServiceStub(channel) for channel in channels]
    client = AsyncRedis.from_url(redis_url)
    subscription = RESULT_PREFIX + task_id
    try:
        threads_before = thread_count(pid)
        calls = await _open_streams(stubs, task_id, STREAMS)
        assert await _numsub(client, subscription) == 1, "one shared subscription for all"
        threads_during = thread_count(pid)
        assert threads_during <= threads_before + SPARE_THREADS, (threads_before, threads_during)
        with grpc.insecure_channel(gateway.address) as other:
            elapsed = await asyncio.to_thread(_round_trip, other)
        assert elapsed < 5.0, f"another client's round trip took {elapsed:.1f}s"
        for call in calls:
            call.cancel()

        async def unsubscribed() -> bool:
            return await _numsub(client, subscription) == 0

        async def threads_settled() -> bool:
            return thread_count(pid) <= threads_before + SPARE_THREADS

        await _eventually(unsubscribed, "the gateway dropping the task's subscription")
        await _eventually(threads_settled, "the gateway's threads settling")
        # Were the 2000 concurrency slots given back? The limit leaves ten over.
        again = await _open_streams(stubs, task_id, 100)
        for call in again:
            call.cancel()
    finally:
        for channel in channels:
            await channel.close()
        await client.aclose()


def test_thousands_of_dropped_streams_leave_nothing_behind(
    spare_gateway: Gateway, redis_server: RedisServer
) -> None:
    with grpc.insecure_channel(spare_gateway.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        _round_trip(channel)  # the publish thread exists before the thread baseline
        far = pb.SubmitOptions(countdown=Duration(seconds=3600))
        task_id = stub.Submit(
            pb.SubmitRequest(task="tasks.add", args_json="[1, 1]", options=far)
        ).task_id
        try:
            asyncio.run(_flood(spare_gateway, redis_server.url, task_id))
        finally:
            stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=10)
        _assert_serving(channel)
