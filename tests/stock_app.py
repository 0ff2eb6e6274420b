"""A stock Celery app, nothing of taskgate in it: the worker side of the conformance test.

Configured from the environment (STOCK_BROKER, STOCK_BACKEND, STOCK_TRANSPORT_JSON),
run with `celery -A tests.stock_app worker`.
"""

import json
import os
from typing import Any

from celery import Celery, Task

app = Celery(
    "stock",
    broker=os.environ.get("STOCK_BROKER", "redis://127.0.0.1:6399/0"),
    backend=os.environ.get("STOCK_BACKEND", "redis://127.0.0.1:6399/0"),
)
app.conf.broker_transport_options = json.loads(os.environ.get("STOCK_TRANSPORT_JSON", "{}"))


@app.task(name="tasks.echo_request", bind=True)
def echo_request(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """What the worker saw of this message: the options as `self.request` holds them."""
    request = self.request
    delivery_info = request.delivery_info or {}
    return {
        "args": list(args),
        "kwargs": kwargs,
        "id": request.id,
        "root_id": request.root_id,
        "correlation_id": request.correlation_id,
        "eta": request.eta,
        "expires": request.expires,
        "priority": delivery_info.get("priority"),
        "routing_key": delivery_info.get("routing_key"),
        "x_custom": getattr(request, "x_custom", None),
        "traceparent": getattr(request, "traceparent", None),
    }
