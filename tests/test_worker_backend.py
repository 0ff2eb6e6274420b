"""Which result backend each side's Celery app uses: the requeueing one is the workers' only."""

from taskgate.server.dispatch import PublishOnlyRedisBackend, create_gateway_app
from taskgate.worker.backend import RequeueingRedisBackend
from taskgate.worker.celery import app as worker_app
from taskgate.worker.config import CelerySettings


def test_the_worker_app_gives_back_tasks_whose_state_cannot_be_stored() -> None:
    assert isinstance(worker_app.backend, RequeueingRedisBackend)
    assert worker_app.conf.result_backend_always_retry is True


def test_the_gateway_app_keeps_its_publish_only_backend() -> None:
    """The gateway stores no task states: a Reject there would have no message to give back."""
    backend = create_gateway_app(CelerySettings(result_backend="redis://127.0.0.1:1/0")).backend
    assert isinstance(backend, PublishOnlyRedisBackend)
    assert not isinstance(backend, RequeueingRedisBackend)
