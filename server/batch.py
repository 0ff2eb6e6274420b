"""SubmitBatch: many submissions, each with its own outcome; one bad item fails no other."""

from collections.abc import Sequence

from taskgate.server.errors import InvalidArgument
from taskgate.server.requests import Submission, parse_submit
from taskgate.server.submitter import Submitter
from taskgate.v1 import task_service_pb2 as pb

MAX_BATCH = 1000


async def submit_batch(
    requests: Sequence[pb.SubmitRequest], submitter: Submitter, time_left: float | None
) -> pb.SubmitBatchResponse:
    """Check every request, then submit the valid ones together; results in request order."""
    if not requests:
        raise InvalidArgument("requests", "must hold at least one submission")
    if len(requests) > MAX_BATCH:
        raise InvalidArgument("requests", f"holds {len(requests)} submissions; at most {MAX_BATCH}")
    results: dict[int, pb.SubmitBatchResult] = {}
    valid: list[tuple[int, Submission]] = []
    for index, request in enumerate(requests):
        try:
            valid.append((index, parse_submit(request)))
        except InvalidArgument as exc:
            results[index] = pb.SubmitBatchResult(
                error=exc.within(f"requests[{index}]").to_status()
            )
    outcomes = await submitter.submit_many([submission for _, submission in valid], time_left)
    for (index, _), outcome in zip(valid, outcomes, strict=True):
        if isinstance(outcome, InvalidArgument):
            results[index] = pb.SubmitBatchResult(
                error=outcome.within(f"requests[{index}]").to_status()
            )
        elif isinstance(outcome, Exception):
            results[index] = pb.SubmitBatchResult(error=outcome.to_status())
        else:
            results[index] = pb.SubmitBatchResult(task_id=outcome.task_id)
    return pb.SubmitBatchResponse(results=[results[index] for index in range(len(requests))])
