"""The broker down when Submit is called: UNAVAILABLE in time, then recovery without a restart.

The stack is private to this module: a broker redis-server that the test
stops and starts again on the same port, a separate result-backend
redis-server that stays up (so the only thing missing is the broker), a
worker and a gateway.
"""

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway, RedisServer, start_worker
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import (
    await_result,
    fault_env,
    managed,
    outcome,
    poll,
    request,
    runs,
    submit,
    unique,
)

DEADLINE = 5.0
# "Well within" the deadline: the publish retries are bounded (3 retries, under a
# second of pauses) and a refused connection fails at once.
PROMPT = 3.0


@dataclass
class Stack:
    """The broker can be replaced (`brokers[-1]` is the current one); the rest stays up."""

    brokers: list[RedisServer]
    backend: RedisServer
    log_dir: Path
    stub: pb_grpc.TaskServiceStub

    @property
    def broker(self) -> RedisServer:
        """The current broker."""
        return self.brokers[-1]

    def start_broker_again(self) -> None:
        """Start a new, empty broker on the stopped one's port."""
        self.brokers.append(RedisServer(self.log_dir, port=self.broker.port))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A broker, a separate backend, a worker and a gateway."""
    log_dir = tmp_path_factory.mktemp("faults-broker")
    brokers: list[RedisServer] = []
    with ExitStack() as processes:
        processes.callback(lambda: [broker.stop() for broker in brokers])
        brokers.append(RedisServer(log_dir))
        backend = processes.enter_context(managed(RedisServer(log_dir)))
        env = fault_env(brokers[0].url, backend.url)
        processes.enter_context(managed(start_worker(env, log_dir)))
        gateway = processes.enter_context(managed(Gateway(env, log_dir)))
        channel = processes.enter_context(grpc.insecure_channel(gateway.address))
        yield Stack(brokers, backend, log_dir, pb_grpc.TaskServiceStub(channel))


def test_submit_with_the_broker_down_is_unavailable_then_recovers(stack: Stack) -> None:
    """Checks the bounded publish (connect timeout, `task_publish_retry_policy`) and the
    mapping of publish errors to UNAVAILABLE (server/dispatch.py), then kombu's reconnect.

    With the broker stopped, every Submit answers UNAVAILABLE, well before its
    5 s deadline, and none answers OK (an OK would be a promise the gateway
    cannot keep: nothing reached a broker). Once a new redis-server listens on
    the same port, the very next Submit succeeds on the same gateway and its
    task runs, and none of the refused tasks ever runs. With unbounded publish
    retries (`task_publish_retry_policy` max_retries=None, tried by hand) a
    refused Submit took 4.5 s of its 5 s deadline and this test fails on the
    time bound; without the mapping it would be INTERNAL. Kombu reconnects its
    pooled broker connection by itself (even with max_retries=0), so the first
    Submit after the restart must not fail.
    """
    assert await_result(stack.stub, submit(stack.stub, "tasks.add", 1, 2)).result_json == "3"
    stack.broker.stop()

    refused = [unique() for _ in range(3)]
    for key in refused:
        submission = request("tests.count_run", key)
        ended = outcome(lambda: stack.stub.Submit(submission, timeout=DEADLINE))  # noqa: B023
        assert ended.code == grpc.StatusCode.UNAVAILABLE, ended
        assert ended.seconds < PROMPT, ended

    stack.start_broker_again()
    key = unique()
    task_id = stack.stub.Submit(request("tests.count_run", key), timeout=DEADLINE).task_id
    result = await_result(stack.stub, task_id, timeout=40)
    assert (pb.TaskState.Name(result.state), result.result_json) == ("TASK_STATE_SUCCESS", "1")
    with stack.backend.client() as client:
        assert [runs(client, key) for key in refused] == [0, 0, 0]


def test_a_worker_holding_a_task_when_the_broker_dies_lives_on_and_consumes_again(
    stack: Stack,
) -> None:
    """The broker is killed while a worker runs a task; the task still finishes, and
    once a broker is back the same worker takes the next task. kombu 5.7 alone ends
    the worker here ("Unrecoverable error: AttributeError", worker/broker_loss.py)."""
    key = unique()
    running = submit(stack.stub, "tests.faults.hold", key, 3)
    with stack.backend.client() as client:
        poll(lambda: runs(client, key) == 1, "the task started", timeout=20)
    stack.broker.popen.kill()
    stack.broker.stop()
    stack.start_broker_again()
    assert await_result(stack.stub, running, timeout=30).state == pb.TASK_STATE_SUCCESS
    later = submit(stack.stub, "tasks.add", 2, 2)
    assert await_result(stack.stub, later, timeout=40).result_json == "4"
