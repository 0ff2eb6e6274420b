"""The shared Celery app factory: safe defaults, precedence, and what it refuses."""

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import SAFE_DEFAULTS, ConfigurationError, build_config


@pytest.fixture
def config_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], str]]:
    """Writes an importable `celeryconfig`-style module and returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(body: str) -> str:
        name = f"celeryconfig_{len(names)}_{tmp_path.name.replace('-', '_')}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def test_defaults_are_the_safe_ones() -> None:
    config = build_config(CelerySettings(), load_tasks=True)
    assert config["task_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_deduplicate_successful_tasks"] is True
    assert config["imports"] == ("taskgate.worker.tasks",)


def test_the_gateway_loads_no_task_code() -> None:
    settings = CelerySettings(task_modules=("myapp.tasks",))
    assert build_config(settings, load_tasks=False)["imports"] == ()


def test_configured_task_modules_replace_the_examples() -> None:
    settings = CelerySettings(task_modules=("myapp.tasks", "myapp.more"))
    assert build_config(settings, load_tasks=True)["imports"] == ("myapp.tasks", "myapp.more")


def test_config_module_overrides_defaults_and_environment_overrides_both(
    config_module: Callable[[str], str],
) -> None:
    module = config_module(
        """
        broker_url = "redis://from-module:6379/1"
        result_backend = "redis://from-module:6379/2"
        timezone = "Asia/Seoul"
        task_routes = {"tasks.add": "low-priority"}
        worker_prefetch_multiplier = 4
        """,
    )
    settings = CelerySettings(broker_url="redis://from-env:6379/0", config_module=module)
    config = build_config(settings, load_tasks=True)
    assert config["broker_url"] == "redis://from-env:6379/0"
    assert config["result_backend"] == "redis://from-module:6379/2"
    assert config["timezone"] == "Asia/Seoul"
    assert config["task_routes"] == {"tasks.add": "low-priority"}
    assert config["worker_prefetch_multiplier"] == 4
    assert config["task_acks_late"] is SAFE_DEFAULTS["task_acks_late"]


@pytest.mark.parametrize(
    "line",
    [
        'task_serializer = "pickle"',
        'accept_content = ["json", "pickle"]',
        'result_accept_content = ["application/x-python-serialize"]',
        'result_serializer = "yaml"',
    ],
)
def test_anything_but_json_is_refused(config_module: Callable[[str], str], line: str) -> None:
    settings = CelerySettings(config_module=config_module(line))
    with pytest.raises(ConfigurationError, match="JSON only"):
        build_config(settings, load_tasks=True)


def test_settings_come_from_the_environment() -> None:
    env = {
        "CELERY_BROKER_URL": "pyamqp://guest@localhost//",
        "CELERY_RESULT_BACKEND": "redis://localhost/1",
        "CELERY_CONFIG_MODULE": "celeryconfig",
        "TASKGATE_TASK_MODULES": "a.tasks, b.tasks,",
    }
    assert CelerySettings.from_env(env) == CelerySettings(
        broker_url="pyamqp://guest@localhost//",
        result_backend="redis://localhost/1",
        config_module="celeryconfig",
        task_modules=("a.tasks", "b.tasks"),
    )
