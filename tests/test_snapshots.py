"""Decoding what a Celery worker stored in the Redis result backend (no server needed)."""

import json

import pytest

from taskgate.server.results import TaskSnapshot
from taskgate.v1 import task_service_pb2 as pb


def stored(status: str, result: object, traceback: str | None = None) -> bytes:
    """A payload shaped like Celery's `celery-task-meta-<id>` value."""
    meta = {"status": status, "result": result, "traceback": traceback, "task_id": "x"}
    return json.dumps(meta).encode()


@pytest.mark.parametrize(
    ("state_name", "state", "ready"),
    [
        ("PENDING", pb.TASK_STATE_PENDING, False),
        ("RECEIVED", pb.TASK_STATE_RECEIVED, False),
        ("STARTED", pb.TASK_STATE_STARTED, False),
        ("RETRY", pb.TASK_STATE_RETRY, False),
        ("SUCCESS", pb.TASK_STATE_SUCCESS, True),
        ("FAILURE", pb.TASK_STATE_FAILURE, True),
        ("REVOKED", pb.TASK_STATE_REVOKED, True),
        ("PROGRESS", pb.TASK_STATE_CUSTOM, False),
    ],
)
def test_states_map_onto_task_state(state_name: str, state: int, ready: bool) -> None:
    snapshot = TaskSnapshot.decode(stored(state_name, None))
    assert (snapshot.state, snapshot.ready) == (state, ready)


def test_custom_state_meta_is_json() -> None:
    snapshot = TaskSnapshot.decode(stored("PROGRESS", {"current": 3, "total": 10}))
    assert json.loads(snapshot.meta_json()) == {"current": 3, "total": 10}
    assert TaskSnapshot.decode(stored("STARTED", {"pid": 1})).meta_json() == ""


def test_failure_becomes_a_task_error() -> None:
    exc = {"exc_type": "KeyError", "exc_message": ["missing"], "exc_module": "builtins"}
    error = TaskSnapshot.decode(stored("FAILURE", exc, "Traceback ...")).error()
    assert (error.type, error.message, error.traceback) == ("KeyError", "missing", "Traceback ...")


def test_exception_with_several_arguments_lists_them() -> None:
    exc = {"exc_type": "OSError", "exc_message": [2, "No such file"], "exc_module": "builtins"}
    assert TaskSnapshot.decode(stored("FAILURE", exc)).error().message == "2, No such file"


def test_kombu_typed_values_become_their_text() -> None:
    value = {"when": {"__type__": "datetime", "__value__": "2026-01-01T00:00:00+00:00"}}
    assert TaskSnapshot.decode(stored("SUCCESS", value)).result == {
        "when": "2026-01-01T00:00:00+00:00"
    }
