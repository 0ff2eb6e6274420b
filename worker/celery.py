"""The workers' Celery app, found by `celery -A worker worker`."""

import logging
from typing import Any

from celery.signals import celeryd_after_setup

from worker.config import CelerySettings
from worker.factory import create_app, describe

logger = logging.getLogger(__name__)

app = create_app(CelerySettings.from_env())


@celeryd_after_setup.connect
def _report_settings(sender: str, **_: Any) -> None:
    logger.info("taskgate worker %s, settings in force: %s", sender, describe(app))
