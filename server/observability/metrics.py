"""The Prometheus series the gateway exports, and the HTTP endpoint that serves them.

All series live in prometheus-client's default registry, which also holds its process
collector (memory, CPU, open files). Gauges name a `multiprocess_mode`, so that a
gateway of several processes can later export them with prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR) without renaming anything.
"""

import logging
import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from taskgate.worker.factory import ConfigurationError

logger = logging.getLogger(__name__)

# go-grpc-prometheus's buckets (Go's prometheus.DefBuckets), so that its dashboards'
# `le` values exist; prometheus-client's default has three more.
GRPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHOD_LABELS = ("grpc_type", "grpc_service", "grpc_method")

GRPC_STARTED = Counter(
    "grpc_server_started", "Total number of RPCs started on the server.", _METHOD_LABELS
)
GRPC_HANDLED = Counter(
    "grpc_server_handled",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    (*_METHOD_LABELS, "grpc_code"),
)
GRPC_RECEIVED = Counter(
    "grpc_server_msg_received",
    "Total number of RPC stream messages received on the server.",
    _METHOD_LABELS,
)
GRPC_SENT = Counter(
    "grpc_server_msg_sent",
    "Total number of gRPC stream messages sent by the server.",
    _METHOD_LABELS,
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level "
    "handled by the server.",
    _METHOD_LABELS,
    buckets=GRPC_BUCKETS,
)

TASKS_SUBMITTED = Counter(
    "taskgate_tasks_submitted",
    "Submissions (Submit, Execute and each SubmitBatch item) by task name and outcome: "
    "queued, deduplicated (an idempotent replay), or the gRPC code of the refusal.",
    ("task", "outcome"),
)
PUBLISH_SECONDS = Histogram(
    "taskgate_publish_seconds",
    "Time to record and publish one task to the broker, retries included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WAITS_IN_PROGRESS = Gauge(
    "taskgate_waits_in_progress",
    "GetResult and Execute calls waiting for a task's result now.",
    multiprocess_mode="livesum",
)
WATCH_STREAMS_OPEN = Gauge(
    "taskgate_watch_streams_open", "WatchStatus streams open now.", multiprocess_mode="livesum"
)
LIMITS_HIT = Counter(
    "taskgate_limits_hit",
    "Calls refused by a limit, by kind (rate, concurrency, caller_concurrency, size, "
    "stream_write) and caller (the token's name; the peer's host without tokens).",
    ("kind", "caller"),
)
MESSAGES_RECLAIMED = Counter(
    "taskgate_messages_reclaimed",
    "Messages queued again by the reclaimer: popped off the Redis broker by a worker "
    "that never received them (server/publish/reclaim.py).",
)
QUEUE_LENGTH = Gauge(
    "celery_queue_length",
    "Messages waiting in the broker's queue, every priority summed (read every few seconds).",
    ("queue_name",),
    multiprocess_mode="mostrecent",
)


class BoundedLabel:
    """A label's values as given, up to `limit` distinct ones, then `other`: a caller label
    fed by peer addresses must not grow without bound."""

    def __init__(self, limit: int = 100, other: str = "other") -> None:
        self._limit = limit
        self._other = other
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return self._other


def serve_metrics(listen: str) -> int:
    """Serve `/metrics` on `listen` (`host:port`) in a background thread; the port bound."""
    host, _, port = listen.rpartition(":")
    try:
        server, _ = start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        raise ConfigurationError(
            f"TASKGATE_METRICS_LISTEN={listen!r}: {exc.strerror or exc}; expected a free local "
            "address (is another gateway already serving metrics there?), or empty for none"
        ) from None
    bound: int = server.server_port
    return bound
