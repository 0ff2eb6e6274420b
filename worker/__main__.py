"""`python -m taskgate.worker [celery worker options]`: run a worker with the configured app."""

import sys


def main() -> None:
    """Start a Celery worker; extra arguments go to `celery worker`.

    A configuration error ends the process with one line (taskgate.worker.celery).
    """
    from taskgate.worker.celery import app  # noqa: PLC0415 - building the app reads the configuration

    app.worker_main(["worker", "--loglevel=INFO", *sys.argv[1:]])


if __name__ == "__main__":
    main()
