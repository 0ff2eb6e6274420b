"""The visibility timeout read from a worker app's settings, and the time limits beyond it.

Pure configuration: the apps here are real Celery apps that never connect.
"""

from typing import Any

from celery import Celery

from taskgate.worker.visibility import redis_visibility_timeout, time_limits_beyond


def _app(broker_url: str, **transport_options: Any) -> Celery:
    app = Celery("visibility-test", broker=broker_url)
    app.conf.broker_transport_options = transport_options
    return app


def test_the_redis_visibility_timeout_is_the_transport_option_else_kombus() -> None:
    assert redis_visibility_timeout(_app("redis://127.0.0.1:1/0", visibility_timeout=7)) == 7
    assert redis_visibility_timeout(_app("redis://127.0.0.1:1/0")) == 3600


def test_a_broker_without_a_visibility_timeout_has_none() -> None:
    assert redis_visibility_timeout(_app("pyamqp://guest:guest@127.0.0.1:1//")) is None
    no_emulation = _app("redis://127.0.0.1:1/0", visibility_timeout=7, ack_emulation=False)
    assert redis_visibility_timeout(no_emulation) is None


def test_a_tasks_own_time_limit_wins_over_task_time_limit() -> None:
    app = _app("redis://127.0.0.1:1/0")
    app.conf.task_time_limit = 20

    @app.task(name="t.own_long", time_limit=60)
    def own_long() -> None: ...

    @app.task(name="t.own_short", time_limit=5)
    def own_short() -> None: ...

    @app.task(name="t.default")
    def default() -> None: ...

    assert _ours(time_limits_beyond(app, 10)) == {"t.default": 20.0, "t.own_long": 60.0}
    assert _ours(time_limits_beyond(app, 30)) == {"t.own_long": 60.0}


def _ours(limits: dict[str, float]) -> dict[str, float]:
    """The tasks of this test: every app also gets the shared tasks imported elsewhere."""
    return {name: limit for name, limit in limits.items() if name.startswith("t.")}
