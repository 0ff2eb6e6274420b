"""`taskgate`: run and follow Celery tasks through a taskgate gateway from a shell.

taskgate submit tasks.add 2 3 --wait     # prints 5
taskgate --help                          # every command; exit codes: taskgate.cli_output
"""

import os


def main() -> None:
    """The console script."""
    # gRPC's core logs connection trouble (a failed TLS handshake, an unreadable CA) to
    # stderr by itself; the command reports each failure once, on one line. gRPC reads
    # this when it is first imported, hence the import below.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from taskgate.cli_commands import commands  # noqa: PLC0415

    commands(prog_name="taskgate")


if __name__ == "__main__":
    main()
