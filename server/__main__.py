"""`python -m taskgate.server`: run the gateway with settings from the environment."""

import sys

from taskgate.server.app import serve
from taskgate.server.config import GatewaySettings
from taskgate.server.launch import (
    configuration_errors_in_one_line,
    configure_logging,
    event_loop_runner,
)
from taskgate.server.process_group import run_group, serve_in_group


def main() -> None:
    """Configure logging, read the settings and serve until stopped, with as many
    processes as TASKGATE_PROCESSES says.

    A configuration error ends the process with one line that names the setting
    (exit status 1), never a traceback.
    """
    with configuration_errors_in_one_line():
        configure_logging()
        settings = GatewaySettings.from_env()
        if settings.processes > 1:
            sys.exit(run_group(settings, serve_in_group))
        event_loop_runner()(serve(settings))


if __name__ == "__main__":
    main()
