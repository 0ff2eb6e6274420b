"""The task catalog: closed by default, and Celery's own tasks never reachable."""

import pytest

from taskgate.server.catalog import Catalog
from taskgate.server.config import GatewaySettings
from taskgate.server.env import SettingsError
from taskgate.server.errors import NotFound


def test_only_matching_names_are_allowed() -> None:
    catalog = Catalog(("tasks.*", "billing.invoice"))
    assert catalog.allows("tasks.add")
    assert catalog.allows("billing.invoice")
    assert not catalog.allows("billing.refund")
    assert not catalog.allows("Tasks.add")


def test_celery_internal_tasks_are_never_allowed() -> None:
    catalog = Catalog(("*",))
    assert catalog.allows("anything.at.all")
    assert not catalog.allows("celery.backend_cleanup")
    assert not catalog.allows("celery.chord_unlock")


def test_a_refused_name_looks_like_a_missing_one() -> None:
    with pytest.raises(NotFound, match=r"no task named 'secret\.task'"):
        Catalog(("tasks.*",)).check("secret.task")


def test_unmatched_lists_the_patterns_no_served_task_matches() -> None:
    catalog = Catalog(("tasks.*", "taks.*", "tasks.*;billing.*", "celery.*"))
    served = ["tasks.add", "celery.backend_cleanup"]
    # celery.* is never the caller's, so Celery's own tasks match no pattern either.
    assert catalog.unmatched(served) == ["taks.*", "tasks.*;billing.*", "celery.*"]


def test_a_switch_setting_names_what_it_expects() -> None:
    with pytest.raises(SettingsError, match=r"TASKGATE_TRACEBACKS='maybe' must be on or off"):
        GatewaySettings.from_env({"TASKGATE_TRACEBACKS": "maybe"})
    assert not GatewaySettings.from_env({"TASKGATE_TRACEBACKS": "off"}).tracebacks
    assert GatewaySettings.from_env({"TASKGATE_REQUIRE_REGISTERED": "ON"}).require_registered
