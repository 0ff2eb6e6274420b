"""SubmitBatch: many submissions, each with its own outcome; one bad item fails no other."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from taskgate.server.errors import GatewayError, InvalidArgument
from taskgate.server.requests import Submission, parse_submit
from taskgate.server.submitter import Submitted
from taskgate.v1 import task_service_pb2 as pb

MAX_BATCH = 1000


Submit = Callable[[Submission], Awaitable[Submitted]]


async def _submit_one(
    index: int, request: pb.SubmitRequest, submit: Submit
) -> pb.SubmitBatchResult:
    try:
        submitted = await submit(parse_submit(request))
        return pb.SubmitBatchResult(task_id=submitted.task_id)
    except InvalidArgument as exc:
        return pb.SubmitBatchResult(error=exc.within(f"requests[{index}]").to_status())
    except GatewayError as exc:
        return pb.SubmitBatchResult(error=exc.to_status())


async def submit_batch(
    requests: Sequence[pb.SubmitRequest], submit: Submit
) -> pb.SubmitBatchResponse:
    """Submit each request concurrently; results come back in request order."""
    if not requests:
        raise InvalidArgument("requests", "must hold at least one submission")
    if len(requests) > MAX_BATCH:
        raise InvalidArgument("requests", f"holds {len(requests)} submissions; at most {MAX_BATCH}")
    results = await asyncio.gather(
        *(_submit_one(index, request, submit) for index, request in enumerate(requests))
    )
    return pb.SubmitBatchResponse(results=results)
