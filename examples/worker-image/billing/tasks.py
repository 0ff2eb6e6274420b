"""The tasks of the example worker image; the gateway submits them by these names."""

from celery import shared_task


@shared_task(name="billing.invoice_total")
def invoice_total(amounts: list[int]) -> int:
    """The sum of an invoice's line amounts, in cents."""
    return sum(amounts)
