"""The `taskgate` command's commands, built on `taskgate.Client` (`taskgate.cli` runs them).

Results are printed as JSON on stdout, errors as one line on stderr;
`taskgate.cli_output` documents the exit codes.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from taskgate._channel import DEFAULT_ADDRESS
from taskgate._models import TaskResult
from taskgate.cli_args import task_args, task_kwargs
from taskgate.cli_output import ExitCode, exit_code, fail, finish_result, print_json
from taskgate.cli_watch import final_exit_code, show_states
from taskgate.client import Client
from taskgate.errors import TaskgateError

# `--wait` alone waits until the task finishes, in waits of this many seconds (the
# gateway caps one wait at TASKGATE_MAX_WAIT, 300 s by default).
WAIT_STEP = 60.0
WAIT_HELP = "Wait up to SECONDS for the result; --wait alone waits until the task finishes."
PEM = click.Path(exists=True, dir_okay=False, path_type=Path)


@dataclass(frozen=True)
class Target:
    """The gateway to call and how, from the global options."""

    address: str
    token: str | None
    tls: bool
    ca: Path | None
    cert: Path | None
    key: Path | None
    timeout: float

    def client(self) -> Client:
        return Client(
            self.address,
            token=self.token,
            tls=self.tls,
            root_certificates=_read_pem(self.ca, "--ca"),
            certificate_chain=_read_pem(self.cert, "--cert"),
            private_key=_read_pem(self.key, "--key"),
            timeout=self.timeout,
        )


def _read_pem(path: Path | None, option: str) -> bytes | None:
    """The file's bytes; a usage error unless it holds PEM (gRPC would only say that the
    TLS handshake failed)."""
    if path is None:
        return None
    data = path.read_bytes()
    if b"-----BEGIN " not in data:
        raise click.BadParameter(f"{path} is not a PEM file", param_hint=option)
    return data


class _Commands(click.Group):
    """Ends a usage error or a refused call with one line on stderr and its exit code."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage():
            try:
                return super().invoke(ctx)
            except TaskgateError as error:
                where = f" (gateway {ctx.obj.address})" if ctx.obj else ""
                fail(f"{error.code.name}: {error.message}{where}", exit_code(error))
            except KeyboardInterrupt:
                # Click's own answer, exit 1, would read as "the task failed".
                fail("interrupted; the task goes on", ExitCode.INTERRUPTED)


@contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except click.UsageError as error:
        hint = f" (see: {error.ctx.command_path} --help)" if error.ctx else ""
        fail(f"{error.format_message()}{hint}", ExitCode.USAGE)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--address", envvar="TASKGATE_ADDRESS", default=DEFAULT_ADDRESS, show_default=True,
              help="The gateway's host:port [env TASKGATE_ADDRESS].")  # fmt: skip
@click.option("--token", envvar="TASKGATE_TOKEN", help="Bearer token [env TASKGATE_TOKEN].")
@click.option("--tls", is_flag=True, help="Use TLS, trusting the system's CAs or --ca.")
@click.option("--ca", type=PEM, help="Trust this CA certificate (PEM); implies --tls.")
@click.option("--cert", type=PEM, help="Client certificate (PEM) for mutual TLS.")
@click.option("--key", type=PEM, help="The client certificate's private key (PEM).")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds each call may take, on top of any --wait.")  # fmt: skip
@click.version_option(package_name="taskgate")
@click.pass_context
def commands(ctx: click.Context, /, **target: Any) -> None:
    """Submit Celery tasks through a taskgate gateway and follow them."""
    ctx.obj = Target(**target)


@commands.command(context_settings={"ignore_unknown_options": True})
@click.argument("task")
@click.argument("args", nargs=-1)
@click.option("--kwarg", "kwargs", multiple=True, metavar="NAME=VALUE",
              help="A keyword argument; VALUE is JSON. Repeatable.")  # fmt: skip
@click.option("--queue", help="The queue to publish to.")
@click.option("--countdown", type=float, metavar="SECONDS", help="Run no sooner than this.")
@click.option("--key", "idempotency_key", help="Idempotency key: the task is queued once.")
@click.option("--wait", type=float, is_flag=False, flag_value=math.inf, metavar="[SECONDS]",
              help=WAIT_HELP)  # fmt: skip
@click.pass_obj
def submit(target: Target, /, task: str, args: tuple[str, ...], kwargs: tuple[str, ...],
           wait: float | None, **options: Any) -> None:  # fmt: skip
    """Queue TASK with ARGS (each a JSON literal); print its id, or with --wait its result."""
    values, named = task_args(args), task_kwargs(kwargs)
    options = {name: value for name, value in options.items() if value is not None}
    with target.client() as client:
        if wait is None:
            submitted = client.submit(task, values, named, **options)
            if submitted.deduplicated:
                key = options["idempotency_key"]
                click.echo(
                    f"taskgate: key {key!r} was used before: its task, not queued again", err=True
                )
            click.echo(submitted.task_id)
            return
        result = client.execute(task, values, named, wait=min(wait, WAIT_STEP), **options)
        finish_result(_until_ready(client, result, wait), wait)


@commands.command()
@click.argument("task_id")
@click.option("--wait", type=float, is_flag=False, flag_value=math.inf, default=0.0,
              metavar="[SECONDS]", help=WAIT_HELP)  # fmt: skip
@click.pass_obj
def result(target: Target, task_id: str, wait: float) -> None:
    """Print the task's result as JSON; its error (exit 1) if it failed."""
    with target.client() as client:
        outcome = client.result(task_id, wait=min(wait, WAIT_STEP))
        finish_result(_until_ready(client, outcome, wait), wait)


@commands.command()
@click.argument("task_id")
@click.pass_obj
def status(target: Target, task_id: str) -> None:
    """Print the task's state now, as JSON."""
    with target.client() as client:
        print_json(client.status(task_id))


@commands.command()
@click.argument("task_id")
@click.pass_obj
def watch(target: Target, task_id: str) -> None:
    """Follow the task until it finishes: a progress bar on a terminal, JSON lines elsewhere."""
    with target.client() as client:
        last = show_states(client.watch(task_id))
    raise SystemExit(final_exit_code(last))


@commands.command()
@click.argument("task_id")
@click.option("--terminate", is_flag=True, help="Also stop the task if it is running.")
@click.pass_obj
def cancel(target: Target, task_id: str, terminate: bool) -> None:
    """Revoke the task; print what happened, as JSON."""
    with target.client() as client:
        print_json(client.cancel(task_id, terminate=terminate))


@commands.command()
@click.pass_obj
def tasks(target: Target) -> None:
    """List the tasks you may submit and the workers serving each, as JSON."""
    with target.client() as client:
        print_json(client.tasks())


def _until_ready(client: Client, outcome: TaskResult, wait: float) -> TaskResult:
    """Wait on in steps while `wait` is unbounded (`--wait` alone) and the task runs."""
    while math.isinf(wait) and not outcome.ready:
        outcome = client.result(outcome.task_id, wait=WAIT_STEP)
    return outcome
