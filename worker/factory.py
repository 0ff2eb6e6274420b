"""The one Celery app factory, used by the workers and by the gateway.

Both sides build their app here so that the broker, the result backend, the
serializers and `task_routes` are the same at publish time and at run time.
"""

import importlib
import importlib.util
import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from taskgate.worker import broker_loss
from taskgate.worker.backend import install_requeueing_backend
from taskgate.worker.config import DEFAULT_REDIS_URL, EXAMPLE_TASK_MODULE, CelerySettings
from taskgate.worker.guard import GUARDED_TASK
from taskgate.worker.heartbeat import HeartbeatStep

logger = logging.getLogger(__name__)

SAFE_DEFAULTS: Mapping[str, Any] = {
    # Pickle runs code when it loads; JSON is also what callers in other languages speak.
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    # A worker that dies mid-task gives the message back instead of losing it.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    # A message delivered again after its task already succeeded (its worker died between
    # storing SUCCESS and acknowledging) is skipped instead of run twice.
    "worker_deduplicate_successful_tasks": True,
    # Callers see STARTED while a task runs, and GetStatus can name the task and worker.
    "task_track_started": True,
    "result_extended": True,
    "result_expires": 86400,
    # A pool process that cannot store a state retries through a backend outage of about
    # a minute (Celery's default retries never): full-jitter backoff from 200 ms, capped
    # at 4 s, so ~2 s a try on average and a task resumes within 4 s of Redis returning.
    # The process is blocked meanwhile and takes no new message; against a frozen Redis
    # each try also waits out the 5 s socket timeout (about 3.5 min in all). After the
    # last try the worker's backend gives the message back (worker/backend.py). Reads
    # retry too: without, a redelivered task's duplicate check fails on a Redis that is
    # still loading and Celery stores FAILURE for a task that never ran.
    "result_backend_always_retry": True,
    "result_backend_max_retries": 30,
    "result_backend_base_sleep_between_retries_ms": 200,
    "result_backend_max_sleep_between_retries_ms": 4000,
    # kombu waits forever on a dead socket by default; a publish must fail instead.
    "broker_connection_timeout": 4.0,
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {
        # RabbitMQ: OK from the broker means it has the message (publisher confirms).
        "confirm_publish": True,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 4.0,
        # Redis: a message unacknowledged for this long is given to another worker, so a
        # whole worker's death costs its tasks about this much plus the sweep below.
        # Workers built by create_app keep the messages they hold fresh
        # (worker/heartbeat.py), so a task may run longer than this without running twice.
        "visibility_timeout": 30,
        # kombu 5.7 looks for overdue messages every interval, scanning every throttle-th
        # time: every 5 s here, instead of kombu's 10 s x 10.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    },
    "redis_socket_timeout": 5.0,
    "redis_socket_connect_timeout": 4.0,
    "task_publish_retry_policy": {
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 1.0,
    },
}

_SERIALIZER_SETTINGS = (
    "task_serializer",
    "result_serializer",
    "accept_content",
    "result_accept_content",
)


class ConfigurationError(Exception):
    """The configuration cannot be used safely; the message says what to change."""


def module_settings(module_name: str) -> dict[str, Any]:
    """The lowercase settings of a `celeryconfig.py`-style module, as Celery reads them."""
    try:
        module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as exc:
        raise ConfigurationError(
            f"CELERY_CONFIG_MODULE={module_name!r} cannot be imported ({exc}); expected "
            "the name of a module on PYTHONPATH, without '.py'"
        ) from None
    return {name: getattr(module, name) for name in dir(module) if name.islower()}


def build_config(settings: CelerySettings, *, load_tasks: bool) -> dict[str, Any]:
    """Merge the safe defaults, the configuration module and the environment, in that order."""
    config: dict[str, Any] = dict(SAFE_DEFAULTS)
    if settings.config_module:
        config.update(module_settings(settings.config_module))
    config["broker_url"] = settings.broker_url or config.get("broker_url") or DEFAULT_REDIS_URL
    config["result_backend"] = (
        settings.result_backend or config.get("result_backend") or DEFAULT_REDIS_URL
    )
    if not load_tasks:
        config["imports"] = ()
        config["include"] = ()
    elif settings.task_modules:
        config["imports"] = settings.task_modules
    elif not (config.get("imports") or config.get("include")):
        config["imports"] = (EXAMPLE_TASK_MODULE,)
    refuse_unsafe_serializers(config)
    return config


def require_modules(settings: CelerySettings, config: Mapping[str, Any]) -> None:
    """Raise ConfigurationError naming the setting when a task module cannot be found.

    Celery would only fail later, inside the worker's start, with a traceback.
    """
    names: list[str] = []
    for key in ("imports", "include"):
        value = config.get(key) or ()
        names += [value] if isinstance(value, str) else list(value)
    if settings.task_modules:
        setting = f"TASKGATE_TASK_MODULES={','.join(settings.task_modules)!r}"
    else:
        setting = f"imports/include of CELERY_CONFIG_MODULE={settings.config_module!r}"
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigurationError(
                f"{setting}: no module named {name!r}; expected task modules importable "
                "from PYTHONPATH, comma-separated"
            )


def refuse_unsafe_serializers(config: Mapping[str, Any]) -> None:
    """Raise when any serializer setting admits something other than JSON."""
    for name in _SERIALIZER_SETTINGS:
        value = config.get(name)
        values = [value] if isinstance(value, str) else list(value or ())
        unsafe = [v for v in values if v not in ("json", "application/json")]
        if unsafe:
            raise ConfigurationError(
                f"{name}={value!r} admits {unsafe}: taskgate accepts JSON only, because "
                "pickle and similar formats run code when a message is loaded"
            )


_REPORTED = (
    "task_serializer",
    "accept_content",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "worker_deduplicate_successful_tasks",
    "task_track_started",
    "result_expires",
    "result_backend_always_retry",
    "result_backend_max_retries",
    "result_backend_base_sleep_between_retries_ms",
    "result_backend_max_sleep_between_retries_ms",
    "broker_transport_options",
    "task_publish_retry_policy",
    # Where tasks go and what they run with: a wrong module shows here first.
    "task_routes",
    "task_annotations",
    "timezone",
)


def sanitized_url(url: str) -> str:
    """`url` with its password masked, in every part of a `;`-separated list (kombu's
    `maybe_sanitize_url` masks only the first)."""
    parts = str(url).split(";")
    return ";".join(maybe_sanitize_url(part) if "@" in part else part for part in parts)


def describe(app: Celery) -> str:
    """The delivery settings in force, one `name=value` each, URLs without passwords."""
    conf = app.conf
    urls = {
        "broker_url": sanitized_url(conf.broker_url),
        "result_backend": sanitized_url(conf.result_backend),
    }
    values = [f"{name}={value}" for name, value in urls.items()]
    values += [f"{name}={conf.get(name)!r}" for name in _REPORTED]
    return ", ".join(values)


def create_app(settings: CelerySettings, *, load_tasks: bool = True) -> Celery:
    """Build a configured Celery app; the gateway passes `load_tasks=False`.

    Workers' tasks skip duplicate messages of a task id (`taskgate.worker.guard`), workers
    keep the Redis messages they hold fresh (`taskgate.worker.heartbeat`), and a task whose
    state cannot be stored goes back to the broker (`taskgate.worker.backend`).
    """
    config = build_config(settings, load_tasks=load_tasks)
    if load_tasks:
        require_modules(settings, config)
    app = Celery("taskgate", task_cls=GUARDED_TASK if load_tasks else None)
    app.conf.update(config)
    if load_tasks:
        app.steps["worker"].add(HeartbeatStep)
        install_requeueing_backend(app)
        broker_loss.install()
    return app
