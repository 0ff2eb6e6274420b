"""taskgate.Client's retries on UNAVAILABLE, with a real gateway that starts late or
restarts, served over TLS with bearer tokens; and which calls are never retried."""

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

import taskgate
from scripts.stack import Gateway, ManagedProcess, free_port
from tests.lifecycle_helpers import poll
from tests.secured_helpers import TOKEN, secured

PATIENT = taskgate.RetryPolicy(attempts=1000, initial_backoff=0.05, max_backoff=0.3)


@dataclass
class LateGateway:
    """A TLS gateway with tokens, on a port chosen before it runs; `start` runs it."""

    env: dict[str, str]
    log_dir: Path
    ca_pem: bytes
    port: int = field(default_factory=free_port)
    running: Gateway | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.running = Gateway(self.env, self.log_dir, listen=self.address)

    def stop(self) -> None:
        if self.running:
            self.running.stop()
            self.running = None

    def crash(self) -> None:
        """SIGKILL: the gateway's connections drop with no goodbye."""
        if self.running:
            self.running.popen.kill()
        self.stop()

    def client(
        self,
        *,
        token: str | None = TOKEN,
        tls: bool = True,
        retry: taskgate.RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> taskgate.Client:
        root = self.ca_pem if tls else None
        return taskgate.Client(
            self.address, token=token, root_certificates=root, retry=retry, timeout=timeout
        )


@pytest.fixture(scope="module")
def late(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str], worker: ManagedProcess
) -> Iterator[LateGateway]:
    log_dir = tmp_path_factory.mktemp("client-retry")
    settings = secured(stack_env, log_dir)
    gateway = LateGateway(settings.env, log_dir, settings.ca_pem())
    yield gateway
    gateway.stop()


@pytest.fixture
def retries(caplog: pytest.LogCaptureFixture) -> Callable[[], int]:
    """How many times the client has said it will try again, so far in this test."""
    caplog.set_level(logging.INFO, logger="taskgate.client")
    return lambda: sum("trying again" in record.getMessage() for record in caplog.records)


def finished_task(gateway: Gateway) -> str:
    """A task run through the session's gateway, which shares the late gateway's Redis."""
    with taskgate.Client(gateway.address) as client:
        return client.execute("tasks.add", [2, 3], wait=10).task_id


def status_once_up(
    late: LateGateway, client: taskgate.Client, task_id: str, retries: Callable[[], int]
) -> taskgate.TaskStatus:
    """Ask for the status while the gateway is down, then start it: the answer comes."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.status, task_id)
        poll(lambda: retries() >= 2, "the client retrying")
        late.start()
        return pending.result(timeout=60)


def test_a_read_retries_until_the_gateway_has_started(
    late: LateGateway, gateway: Gateway, retries: Callable[[], int]
) -> None:
    task_id = finished_task(gateway)
    with late.client(retry=PATIENT, timeout=60) as client:
        status = status_once_up(late, client, task_id, retries)
    assert (status.task_id, status.state) == (task_id, taskgate.TaskState.SUCCESS)


def test_a_read_retries_through_a_gateway_restart(
    late: LateGateway, gateway: Gateway, retries: Callable[[], int]
) -> None:
    if late.running is None:
        late.start()
    task_id = finished_task(gateway)
    with late.client(retry=PATIENT, timeout=60) as client:
        assert client.status(task_id).ready
        late.stop()
        status = status_once_up(late, client, task_id, retries)
    assert status.state == taskgate.TaskState.SUCCESS


def test_a_watch_cut_by_a_crash_goes_on_once_the_gateway_is_back(
    late: LateGateway, retries: Callable[[], int]
) -> None:
    if late.running is None:
        late.start()
    with late.client(retry=PATIENT) as client, ThreadPoolExecutor(1) as pool:
        task_id = client.submit("tasks.progress", [6, 0.4]).task_id
        states = client.watch(task_id, timeout=60)
        seen = [next(states)]
        while seen[-1].progress is None:
            seen.append(next(states))
        late.crash()
        rest = pool.submit(list, states)
        poll(lambda: retries() >= 1, "the watch retrying")
        late.start()
        seen += rest.result(timeout=60)
    steps = [status.progress[0] for status in seen if status.progress]
    assert steps == sorted(set(steps))  # in order, none twice
    assert steps[-1] == 6
    assert seen[-1].state == taskgate.TaskState.SUCCESS


def test_token_and_tls_reach_the_secured_gateway(late: LateGateway) -> None:
    if late.running is None:
        late.start()
    with late.client() as client:
        assert client.execute("tasks.add", [2, 3], wait=10).value == 5
    with late.client(token=None) as anonymous, pytest.raises(taskgate.Unauthenticated) as caught:
        anonymous.tasks()
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with late.client(tls=False) as plaintext, pytest.raises(taskgate.Unavailable):
        plaintext.tasks()


def test_only_a_submit_with_a_key_is_retried(retries: Callable[[], int]) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    with taskgate.Client(nobody, retry=taskgate.RetryPolicy(attempts=3, initial_backoff=0.01)) as c:
        with pytest.raises(taskgate.Unavailable):
            c.submit("tasks.add", [1, 2])
        assert retries() == 0
        with pytest.raises(taskgate.Unavailable):
            c.submit("tasks.add", [1, 2], idempotency_key="order-1")
        assert retries() == 2
