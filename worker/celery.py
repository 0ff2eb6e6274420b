"""The workers' Celery app, found by `celery -A taskgate.worker worker`."""

import logging
import os
import sys
from typing import Any

from celery.signals import celeryd_after_setup

from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import ConfigurationError, create_app, describe
from taskgate.worker.logs import install_json_logs, log_format
from taskgate.worker.tracing import install_worker_tracing, tracing_exporters

logger = logging.getLogger(__name__)

try:
    app = create_app(CelerySettings.from_env())
    if log_format(os.environ) == "json":
        install_json_logs()
    exporters = tracing_exporters(os.environ)
    if exporters is not None:
        install_worker_tracing(exporters)
except ConfigurationError as exc:
    # Celery's command line prints the traceback of any error raised here; an operator
    # needs the one line that names the setting (and exit status 1) instead.
    sys.exit(f"taskgate worker: configuration error: {exc}")


@celeryd_after_setup.connect
def _report_settings(sender: str, **_: Any) -> None:
    logger.info("taskgate worker %s, settings in force: %s", sender, describe(app))
