"""The Go and Node clients of `examples/`, generated from `proto/`, against a real gateway.

Each client walks through the RPCs once and prints one JSON line per step; these tests
read what it printed, as a caller in that language would see it.
"""

from typing import Any

import grpc
import pytest

from scripts.stack import Gateway
from tests.example_clients import Step, build_go_client, node_command, run_client


@pytest.fixture(scope="module", params=["go", "node"])
def steps(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Step]:
    """What one client printed for each step of its walk through the RPCs."""
    if request.param == "go":
        command = build_go_client(tmp_path_factory.mktemp("gopath"))
    else:
        command = node_command()
    # Asked for only now: a missing toolchain skips before the stack is started.
    gateway: Gateway = request.getfixturevalue("gateway")
    return run_client(command, gateway.address)


def test_submit_then_wait_returns_the_sum(steps: dict[str, Step]) -> None:
    assert steps["submit"] == {"state": "TASK_STATE_SUCCESS", "result": 5}


def test_execute_returns_the_sum(steps: dict[str, Step]) -> None:
    assert steps["execute"] == {"state": "TASK_STATE_SUCCESS", "result": 9}


def test_watch_sees_each_progress_meta_then_success(steps: dict[str, Step]) -> None:
    watch = steps["watch"]
    assert watch["progress"] == [{"current": step, "total": 3} for step in (1, 2, 3)]
    states: list[str] = watch["states"]
    assert states[-1] == "SUCCESS"
    assert states.count("PROGRESS") == 3


def test_failed_task_is_read_from_error(steps: dict[str, Step]) -> None:
    failure = {"state": "TASK_STATE_FAILURE", "type": "ValueError", "message": "boom"}
    assert steps["error"] == failure


def test_propagated_failure_carries_error_info_and_task_error(steps: dict[str, Step]) -> None:
    propagate = steps["propagate"]
    assert propagate["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    details: dict[str, dict[str, Any]] = {
        item["type"]: item["value"] for item in propagate["details"]
    }
    assert details["google.rpc.ErrorInfo"]["reason"] == "TASK_FAILED"
    task_error = details["taskgate.v1.TaskError"]
    assert (task_error["type"], task_error["message"]) == ("ValueError", "boom")


def test_unknown_id_is_not_found(steps: dict[str, Step]) -> None:
    assert steps["not_found"]["code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_retry_with_the_same_key_returns_the_same_task(steps: dict[str, Step]) -> None:
    idempotent = steps["idempotent"]
    assert idempotent["retried"] == idempotent["first"]
    assert idempotent["deduplicated"] is True
