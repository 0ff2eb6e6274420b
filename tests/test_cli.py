"""The `taskgate` command through its installed entry point, against the session's real
gateway and worker: what it prints on stdout and stderr, and each exit code."""

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.stack import Gateway, ManagedProcess, free_port
from taskgate.cli_output import ExitCode
from tests.fault_helpers import managed
from tests.secured_helpers import Secured, secured

COMMAND = Path(sys.executable).with_name("taskgate")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def taskgate(gateway: Gateway, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command with TASKGATE_ADDRESS naming the gateway; never a terminal."""
    env = {**os.environ, "TASKGATE_ADDRESS": gateway.address, **env}
    return subprocess.run(
        [str(COMMAND), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def succeeds(gateway: Gateway, *args: str, **env: str) -> str:
    """Run the command, which must exit 0 and print nothing on stderr; return its stdout."""
    done = taskgate(gateway, *args, **env)
    assert (done.returncode, done.stderr) == (0, ""), done
    return done.stdout


def fails(gateway: Gateway, code: ExitCode, *args: str, **env: str) -> str:
    """Run the command, which must exit `code` with one line on stderr; return that line."""
    done = taskgate(gateway, *args, **env)
    assert done.returncode == code, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("taskgate: ")
    return done.stderr


def test_submit_wait_prints_the_result(gateway: Gateway) -> None:
    assert succeeds(gateway, "submit", "tasks.add", "2", "3", "--wait") == "5\n"


def test_arguments_are_json_literals(gateway: Gateway) -> None:
    assert succeeds(gateway, "submit", "tasks.add", '"ab"', '"cd"', "--wait", "10") == '"abcd"\n'
    named = succeeds(
        gateway, "submit", "tasks.add", "--kwarg", "x=[1]", "--kwarg", "y=[-2]", "--wait=10"
    )
    assert json.loads(named) == [1, -2]
    assert succeeds(gateway, "submit", "tasks.add", "-1", "-2.5", "--wait") == "-3.5\n"


def test_submit_prints_the_id_that_result_and_status_take(gateway: Gateway) -> None:
    task_id = succeeds(gateway, "submit", "tasks.add", "2", "3").strip()
    assert str(uuid.UUID(task_id)) == task_id
    assert succeeds(gateway, "result", task_id, "--wait", "10") == "5\n"
    status = json.loads(succeeds(gateway, "status", task_id))
    assert (status["task_id"], status["state"], status["task"]) == (task_id, "SUCCESS", "tasks.add")
    assert status["date_done"]
    assert status["worker"]


def test_watch_prints_one_json_line_per_state(gateway: Gateway) -> None:
    task_id = succeeds(gateway, "submit", "tasks.progress", "3", "0.2").strip()
    states = [json.loads(line) for line in succeeds(gateway, "watch", task_id).splitlines()]
    metas = [state["meta"] for state in states if state["state_name"] == "PROGRESS"]
    assert metas == [{"current": step, "total": 3} for step in (1, 2, 3)]
    assert states[-1]["state"] == "SUCCESS"
    assert {state["task_id"] for state in states} == {task_id}


def test_cancel_revokes_a_queued_task(gateway: Gateway) -> None:
    task_id = succeeds(gateway, "submit", "tasks.add", "1", "2", "--countdown", "30").strip()
    cancelled = json.loads(succeeds(gateway, "cancel", task_id))
    assert cancelled == {"task_id": task_id, "outcome": "REVOKED", "state": "REVOKED"}
    assert "TaskRevokedError" in fails(gateway, ExitCode.TASK_FAILED, "result", task_id)
    watched = taskgate(gateway, "watch", task_id)
    assert watched.returncode == ExitCode.TASK_FAILED
    assert json.loads(watched.stdout.splitlines()[-1])["state"] == "REVOKED"


def test_ctrl_c_stops_a_watch_with_exit_130_and_the_task_goes_on(gateway: Gateway) -> None:
    task_id = succeeds(gateway, "submit", "tasks.sleep", "2").strip()
    env = {**os.environ, "TASKGATE_ADDRESS": gateway.address}
    command = [str(COMMAND), "watch", task_id]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as watch:
        assert watch.stdout is not None
        assert json.loads(watch.stdout.readline())["task_id"] == task_id  # the stream is open
        watch.send_signal(signal.SIGINT)
        _, stderr = watch.communicate(timeout=30)
    assert watch.returncode == ExitCode.INTERRUPTED
    assert stderr.decode() == "taskgate: interrupted; the task goes on\n"
    assert succeeds(gateway, "result", task_id, "--wait", "10") == "2\n"


def test_tasks_lists_the_catalog(gateway: Gateway) -> None:
    catalog = json.loads(succeeds(gateway, "tasks"))
    by_name = {task["name"]: task for task in catalog["tasks"]}
    assert by_name["tasks.add"]["workers"]
    assert by_name["tasks.subtraction"]["ignore_result"] is True


def test_a_bare_word_is_a_usage_error_naming_it(gateway: Gateway) -> None:
    line = fails(gateway, ExitCode.USAGE, "submit", "tasks.add", "hello", "3")
    assert "'hello'" in line
    assert "'\"hello\"'" in line


def test_a_failed_task_exits_1_with_its_error(gateway: Gateway) -> None:
    line = fails(gateway, ExitCode.TASK_FAILED, "submit", "tasks.fail", '"disk full"', "--wait")
    assert "FAILURE: ValueError: disk full" in line


def test_an_unknown_id_exits_3(gateway: Gateway) -> None:
    assert "NOT_FOUND" in fails(gateway, ExitCode.NOT_FOUND, "status", str(uuid.uuid4()))


def test_no_gateway_exits_4(gateway: Gateway) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    line = fails(gateway, ExitCode.UNAVAILABLE, "--address", nobody, "status", str(uuid.uuid4()))
    assert "UNAVAILABLE: " in line
    assert nobody in line


def test_a_wait_that_runs_out_exits_5_naming_the_task(gateway: Gateway) -> None:
    line = fails(gateway, ExitCode.NOT_FINISHED, "submit", "tasks.sleep", "1", "--wait", "0.1")
    assert "not finished after 0.1 s" in line
    assert "taskgate result " in line


def test_a_value_the_gateway_refuses_is_a_usage_error(gateway: Gateway) -> None:
    line = fails(gateway, ExitCode.USAGE, "submit", "tasks.add", "1", "--countdown", "-1")
    assert "options.countdown" in line


def test_a_key_submits_once_and_refuses_another_request_with_exit_6(gateway: Gateway) -> None:
    key = f"order-{uuid.uuid4()}"
    first = succeeds(gateway, "submit", "tasks.add", "1", "2", "--key", key)
    again = taskgate(gateway, "submit", "tasks.add", "1", "2", "--key", key)
    assert (again.returncode, again.stdout) == (0, first)
    assert "was used before" in again.stderr
    line = fails(gateway, ExitCode.REFUSED, "submit", "tasks.add", "1", "3", "--key", key)
    assert "ALREADY_EXISTS" in line


@pytest.fixture(scope="module")
def secured_gateway(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str], worker: ManagedProcess
) -> Iterator[tuple[Gateway, Secured]]:
    """A gateway that serves TLS only and requires a bearer token."""
    log_dir = tmp_path_factory.mktemp("cli-secured")
    settings = secured(stack_env, log_dir)
    with managed(Gateway(settings.env, log_dir)) as running:
        yield running, settings


def test_the_token_and_ca_flags_reach_a_secured_gateway(
    secured_gateway: tuple[Gateway, Secured],
) -> None:
    gateway, settings = secured_gateway
    ca = ("--ca", str(settings.ca))
    assert (
        succeeds(gateway, *ca, "--token", settings.token, "submit", "tasks.add", "1", "2", "--wait")
        == "3\n"
    )
    assert succeeds(gateway, *ca, "tasks", TASKGATE_TOKEN=settings.token)
    assert "UNAUTHENTICATED" in fails(gateway, ExitCode.REFUSED, *ca, "tasks")


def test_tls_without_the_gateway_s_ca_is_unavailable(
    secured_gateway: tuple[Gateway, Secured],
) -> None:
    gateway, settings = secured_gateway
    fails(gateway, ExitCode.UNAVAILABLE, "--tls", "--token", settings.token, "tasks")
    fails(gateway, ExitCode.UNAVAILABLE, "--token", settings.token, "tasks")


def test_a_ca_file_that_is_not_pem_is_a_usage_error(
    secured_gateway: tuple[Gateway, Secured],
) -> None:
    gateway, _ = secured_gateway
    assert "--ca" in fails(gateway, ExitCode.USAGE, "--ca", __file__, "tasks")


def on_a_terminal(gateway: Gateway, *args: str) -> tuple[int, str]:
    """Run the command with stdout on a pseudo-terminal; its exit code and what it drew."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TASKGATE_ADDRESS": gateway.address, "COLUMNS": "100"}
    process = subprocess.Popen([str(COMMAND), *args], env=env, stdout=follower, stderr=follower)
    os.close(follower)
    drawn = bytearray()
    with contextlib.suppress(OSError):  # EIO once the command has exited and closed it
        while chunk := os.read(leader, 4096):
            drawn += chunk
    os.close(leader)
    return process.wait(timeout=60), ANSI_ESCAPE.sub("", drawn.decode(errors="replace"))


def test_watch_on_a_terminal_draws_a_progress_bar(gateway: Gateway) -> None:
    task_id = succeeds(gateway, "submit", "tasks.progress", "3", "0.2").strip()
    code, drawn = on_a_terminal(gateway, "watch", task_id)
    assert code == ExitCode.OK, drawn
    assert "━" in drawn  # the bar
    assert "3/3" in drawn
    assert f"{task_id} SUCCESS" in drawn
