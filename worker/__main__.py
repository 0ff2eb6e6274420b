"""`python -m worker [celery worker options]`: run a worker with the configured app."""

import sys

from worker.factory import ConfigurationError


def main() -> None:
    """Start a Celery worker; extra arguments go to `celery worker`."""
    try:
        from worker.celery import app  # noqa: PLC0415 - building the app reads the configuration
    except ConfigurationError as exc:
        sys.exit(f"taskgate worker: configuration error: {exc}")
    app.worker_main(["worker", "--loglevel=INFO", *sys.argv[1:]])


if __name__ == "__main__":
    main()
