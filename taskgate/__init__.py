"""The taskgate contract and its Python client.

`taskgate.Client` and `taskgate.AsyncClient` call the gateway with Python values and
return dataclasses; `taskgate.errors` has the exceptions they raise. The generated
gRPC stubs for `taskgate.v1` live in `taskgate.v1`.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskgate._models import (
        BatchItem,
        Cancelled,
        CancelOutcome,
        ExceptionInfo,
        Submission,
        Submitted,
        TaskCatalog,
        TaskInfo,
        TaskResult,
        TaskState,
        TaskStatus,
    )
    from taskgate._retry import RetryPolicy
    from taskgate.aio import AsyncClient
    from taskgate.client import Client
    from taskgate.errors import (
        DeadlineExceeded,
        FailedPrecondition,
        IdempotencyKeyReused,
        InternalError,
        InvalidArgument,
        PermissionDenied,
        ResourceExhausted,
        ResultIgnored,
        TaskFailed,
        TaskgateError,
        TaskNotFound,
        TaskRevoked,
        Unauthenticated,
        Unavailable,
    )

# Loaded on first use, so that importing `taskgate.v1` (the gateway, `make proto`)
# does not import the client, and `make proto` runs even while the stubs do not import.
_EXPORTS = {
    "AsyncClient": "taskgate.aio",
    "BatchItem": "taskgate._models",
    "CancelOutcome": "taskgate._models",
    "Cancelled": "taskgate._models",
    "Client": "taskgate.client",
    "DeadlineExceeded": "taskgate.errors",
    "ExceptionInfo": "taskgate._models",
    "FailedPrecondition": "taskgate.errors",
    "IdempotencyKeyReused": "taskgate.errors",
    "InternalError": "taskgate.errors",
    "InvalidArgument": "taskgate.errors",
    "PermissionDenied": "taskgate.errors",
    "ResourceExhausted": "taskgate.errors",
    "ResultIgnored": "taskgate.errors",
    "RetryPolicy": "taskgate._retry",
    "Submission": "taskgate._models",
    "Submitted": "taskgate._models",
    "TaskCatalog": "taskgate._models",
    "TaskFailed": "taskgate.errors",
    "TaskInfo": "taskgate._models",
    "TaskNotFound": "taskgate.errors",
    "TaskResult": "taskgate._models",
    "TaskRevoked": "taskgate.errors",
    "TaskState": "taskgate._models",
    "TaskStatus": "taskgate._models",
    "TaskgateError": "taskgate.errors",
    "Unauthenticated": "taskgate.errors",
    "Unavailable": "taskgate.errors",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskgate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncClient",
    "BatchItem",
    "CancelOutcome",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "ExceptionInfo",
    "FailedPrecondition",
    "IdempotencyKeyReused",
    "InternalError",
    "InvalidArgument",
    "PermissionDenied",
    "ResourceExhausted",
    "ResultIgnored",
    "RetryPolicy",
    "Submission",
    "Submitted",
    "TaskCatalog",
    "TaskFailed",
    "TaskInfo",
    "TaskNotFound",
    "TaskResult",
    "TaskRevoked",
    "TaskState",
    "TaskStatus",
    "TaskgateError",
    "Unauthenticated",
    "Unavailable",
]
