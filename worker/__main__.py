"""`python -m worker [celery worker options]`: run a worker with the configured app."""

import sys

from worker.celery import app


def main() -> None:
    """Start a Celery worker; extra arguments go to `celery worker`."""
    app.worker_main(["worker", "--loglevel=INFO", *sys.argv[1:]])


if __name__ == "__main__":
    main()
