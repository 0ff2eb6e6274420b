"""Python values to request messages: arguments as JSON text, times as protobuf types."""

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from taskgate._models import Submission
from taskgate.v1 import task_service_pb2 as pb


def to_json(value: Any) -> str:
    """`value` as strict JSON text; NaN and infinities are refused here, as the gateway would."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def duration(seconds: float | timedelta) -> Duration:
    """A protobuf Duration of `seconds` (a number or a timedelta)."""
    span = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
    message = Duration()
    message.FromTimedelta(span)
    return message


def timestamp(moment: datetime | float | timedelta) -> Timestamp:
    """A protobuf Timestamp: a datetime (naive means UTC), or a delay from now."""
    if not isinstance(moment, datetime):
        span = moment if isinstance(moment, timedelta) else timedelta(seconds=moment)
        moment = datetime.now(UTC) + span
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def submit_options(submission: Submission) -> pb.SubmitOptions:
    """The calling options of `submission`, leaving unset what it leaves unset."""
    options = pb.SubmitOptions(queue=submission.queue or "", headers=dict(submission.headers))
    if submission.countdown is not None:
        options.countdown.CopyFrom(duration(submission.countdown))
    if submission.eta is not None:
        options.eta.CopyFrom(timestamp(submission.eta))
    if submission.expires is not None:
        options.expires.CopyFrom(timestamp(submission.expires))
    if submission.priority is not None:
        options.priority = submission.priority
    return options


def submit_request(submission: Submission) -> pb.SubmitRequest:
    """The SubmitRequest for `submission`."""
    return pb.SubmitRequest(
        task=submission.task,
        args_json=to_json(list(submission.args)),
        kwargs_json=to_json(dict(submission.kwargs)),
        options=submit_options(submission),
        idempotency_key=submission.idempotency_key or "",
    )


def result_request(task_id: str, wait: float, propagate: bool) -> pb.GetResultRequest:
    """The GetResultRequest waiting up to `wait` seconds."""
    return pb.GetResultRequest(task_id=task_id, wait=duration(wait), propagate=propagate)


def execute_request(submission: Submission, wait: float, propagate: bool) -> pb.ExecuteRequest:
    """The ExecuteRequest: submit, then wait up to `wait` seconds."""
    return pb.ExecuteRequest(
        submit=submit_request(submission), wait=duration(wait), propagate=propagate
    )


def batch_request(submissions: Sequence[Submission]) -> pb.SubmitBatchRequest:
    """The SubmitBatchRequest, one item per submission in order."""
    return pb.SubmitBatchRequest(requests=[submit_request(s) for s in submissions])
