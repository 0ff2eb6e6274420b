"""The task catalog: closed by default, and Celery's own tasks never reachable."""

import pytest

from server.catalog import Catalog
from server.errors import NotFound


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
