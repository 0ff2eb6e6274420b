"""OpenTelemetry, with the `otel` extra: the provider both sides build, and the workers' hook.

Nothing here imports OpenTelemetry until tracing is on, so that the extra stays optional.
"""

import importlib.util
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from celery.signals import worker_process_init

from taskgate.worker.factory import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACING_MODES = ("off", "otel")
_EXPORTER_GROUP = "opentelemetry_traces_exporter"


def tracing_exporters(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """`TASKGATE_TRACING=otel`: the exporters named by `OTEL_TRACES_EXPORTER` (default
    `otlp`; `none` for no export); None when tracing is off (the default)."""
    raw = (env.get("TASKGATE_TRACING") or "off").strip().lower()
    if raw not in TRACING_MODES:
        raise ConfigurationError(f"TASKGATE_TRACING={raw!r}; expected one of off, otel")
    if raw == "off":
        return None
    if not _otel_installed():
        raise ConfigurationError(
            "TASKGATE_TRACING=otel needs the otel extra: pip install 'taskgate[otel]'"
        )
    names = (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
    chosen = tuple(name.strip() for name in names if name.strip() not in ("", "none"))
    known = {point.name for point in entry_points(group=_EXPORTER_GROUP)}
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={unknown}: no such exporter installed; "
            f"expected some of {', '.join(sorted(known))} or none"
        )
    return chosen


def _otel_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except ImportError:  # not even opentelemetry itself
        return False


def tracer_provider(exporters: tuple[str, ...]) -> "TracerProvider":
    """An SDK provider that batches spans to `exporters`; the resource, the sampler and
    each exporter read their own standard `OTEL_*` variables (OTEL_SERVICE_NAME...)."""
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create())
    for point in entry_points(group=_EXPORTER_GROUP):
        if point.name in exporters:
            provider.add_span_processor(BatchSpanProcessor(point.load()()))
    return provider


def install_worker_tracing(exporters: tuple[str, ...]) -> None:
    """Instrument Celery in each pool process, where the exporter threads must start
    (a thread does not survive the fork): a task's span continues the `traceparent`
    header of its message."""

    def instrument(**_: Any) -> None:
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415

        trace.set_tracer_provider(tracer_provider(exporters))
        CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]

    worker_process_init.connect(instrument, weak=False)
