"""What the `taskgate` command prints, and the exit code it ends with.

Exit codes: 0 done; 1 the task failed or was revoked; 2 a usage error (a bad
command line, or a value the gateway refused as INVALID_ARGUMENT); 3 not found (an
unknown task id, a task name outside the catalog); 4 unavailable (the gateway, or its
broker or result backend, cannot be reached); 5 not finished (the wait or the
timeout ran out first); 6 any other refusal (no or a wrong token, no permission, an
idempotency key reused, a limit, a fault in the gateway); 130 interrupted (Ctrl-C).
"""

import dataclasses
import json
import sys
from datetime import datetime
from enum import IntEnum
from typing import Any, NoReturn

import click

from taskgate._models import TaskResult
from taskgate.errors import (
    DeadlineExceeded,
    InvalidArgument,
    TaskFailed,
    TaskgateError,
    TaskNotFound,
    Unavailable,
)


class ExitCode(IntEnum):
    """The `taskgate` command's exit codes (see the module docstring)."""

    OK = 0
    TASK_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    UNAVAILABLE = 4
    NOT_FINISHED = 5
    REFUSED = 6
    INTERRUPTED = 130


def exit_code(error: TaskgateError) -> ExitCode:
    """The exit code for a call that raised `error`."""
    codes: list[tuple[type[TaskgateError], ExitCode]] = [
        (TaskFailed, ExitCode.TASK_FAILED),
        (InvalidArgument, ExitCode.USAGE),
        (TaskNotFound, ExitCode.NOT_FOUND),
        (Unavailable, ExitCode.UNAVAILABLE),
        (DeadlineExceeded, ExitCode.NOT_FINISHED),
    ]
    return next((code for kind, code in codes if isinstance(error, kind)), ExitCode.REFUSED)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def as_json(value: Any) -> str:
    """`value` (a dataclass or plain data) as JSON: indented for a terminal, else one line."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    indent = 2 if sys.stdout.isatty() else None
    return json.dumps(value, indent=indent, default=_plain)


def print_json(value: Any) -> None:
    """Print `value` as JSON on stdout, at once (a watch prints as states arrive)."""
    click.echo(as_json(value))
    sys.stdout.flush()


def fail(message: str, code: ExitCode) -> NoReturn:
    """End the command with one line on stderr and `code`."""
    click.echo(f"taskgate: {' '.join(message.splitlines())}", err=True)
    raise SystemExit(code)


def finish_result(result: TaskResult, waited: float | None) -> None:
    """Print a finished task's value, or end with the task's error or its state."""
    if result.ready and result.error is None:
        print_json(result.value)
        return
    if result.error is not None:
        error = result.error
        fail(
            f"task {result.task_id} {result.state}: {error.type}: {error.message}",
            ExitCode.TASK_FAILED,
        )
    after = f" after {waited:g} s" if waited else ""
    fail(
        f"task {result.task_id} not finished{after} (state {result.state}); "
        f"go on with: taskgate result {result.task_id} --wait",
        ExitCode.NOT_FINISHED,
    )
