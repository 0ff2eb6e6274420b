"""The workers' Celery app, found by `celery -A worker worker`."""

from worker.config import CelerySettings
from worker.factory import create_app

app = create_app(CelerySettings.from_env())
