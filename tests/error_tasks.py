"""Tasks that raise the exceptions of domain code, for tests/test_task_errors.py.

A worker loads them with TASKGATE_TASK_MODULES=...,tests.error_tasks; their names
start with "tests." so a gateway with TASKGATE_TASKS=tests.* allows them.
"""

from celery import shared_task


class PaymentDeclined(Exception):
    """A domain exception whose `__init__` takes other arguments than its `args`:
    Celery cannot pickle it on the worker and stores UnpickleableExceptionWrapper."""

    def __init__(self, order_id: int, reason: str) -> None:
        super().__init__(f"order {order_id} declined: {reason}")
        self.order_id = order_id


@shared_task(name="tests.errors.decline")
def decline(order_id: int, reason: str) -> None:
    """Refuse the payment for `order_id`, as billing code does."""
    raise PaymentDeclined(order_id, reason)
