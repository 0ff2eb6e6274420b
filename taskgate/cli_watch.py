"""`taskgate watch`: a live progress bar on a terminal, one JSON line per state elsewhere."""

import sys
from collections.abc import Iterable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from taskgate._models import TaskState, TaskStatus
from taskgate.cli_output import ExitCode, print_json


def show_states(states: Iterable[TaskStatus]) -> TaskStatus | None:
    """Display each state as it arrives; return the last one (None if there was none)."""
    if sys.stdout.isatty():
        return _show_live(states)
    last = None
    for last in states:
        print_json(last)
    return last


def _show_live(states: Iterable[TaskStatus]) -> TaskStatus | None:
    """A bar for PROGRESS metas that carry `current` and `total`; a line per other state."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    last = None
    with Progress(*columns, console=Console()) as display:
        bar = display.add_task("PENDING", total=None)
        for last in states:
            progress = last.progress
            if progress is None:
                display.console.print(f"{last.task_id} {last.state_name}")
                display.update(bar, description=last.state_name)
            else:
                current, total = progress
                display.update(bar, description=last.state_name, completed=current, total=total)
    return last


def final_exit_code(last: TaskStatus | None) -> ExitCode:
    """0 when the watched task succeeded, 1 when it failed or was revoked."""
    if last is not None and last.state == TaskState.SUCCESS:
        return ExitCode.OK
    return ExitCode.TASK_FAILED
