"""Durations and timestamps from requests, checked before they reach Celery or Python's datetime.

Protobuf allows values (about 10,000 years, negative nanos) that overflow
`datetime` or Celery's date arithmetic; here they become INVALID_ARGUMENT.
"""

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from taskgate.server.errors import InvalidArgument

MAX_AHEAD = timedelta(days=3650)
"""The furthest into the future a delay, a deadline or a wait may reach: ten years."""


def seconds(duration: Duration, field: str) -> float:
    """A non-negative Duration, no longer than MAX_AHEAD, in seconds."""
    value = duration.seconds + duration.nanos / 1e9
    if value < 0 or duration.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if value > MAX_AHEAD.total_seconds():
        raise InvalidArgument(field, f"must be at most {MAX_AHEAD.days} days")
    return value


def moment(stamp: Timestamp, field: str, now: datetime) -> datetime:
    """A valid Timestamp, no further than MAX_AHEAD from `now`, as an aware datetime."""
    try:
        value = stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None
    if value - now > MAX_AHEAD:
        raise InvalidArgument(field, f"must be at most {MAX_AHEAD.days} days ahead")
    return value
