"""Request parsing alone: JSON arguments, options, names and ids (no server needed)."""

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from taskgate.server.codec import dumps
from taskgate.server.errors import InvalidArgument
from taskgate.server.requests import parse_submit, parse_task_id
from taskgate.v1 import task_service_pb2 as pb

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(when: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(when)
    return result


def test_empty_json_means_no_arguments() -> None:
    submission = parse_submit(pb.SubmitRequest(task="tasks.add"), NOW)
    assert (submission.args, submission.kwargs, submission.options) == ([], {}, {})


def test_arguments_keep_their_json_types() -> None:
    request = pb.SubmitRequest(
        task="tasks.add",
        args_json='[1, 2.5, "x", null, true, [1], {"a": 1}]',
        kwargs_json='{"n": 12345678901234567890}',
    )
    submission = parse_submit(request, NOW)
    assert submission.args == [1, 2.5, "x", None, True, [1], {"a": 1}]
    assert submission.kwargs == {"n": 12345678901234567890}


def test_options_map_to_celery_calling_options() -> None:
    options = pb.SubmitOptions(
        queue="low-priority",
        countdown=Duration(seconds=3, nanos=500_000_000),
        expires=stamp(NOW + timedelta(minutes=5)),
        priority=0,
        headers={"tenant": "blue"},
    )
    submission = parse_submit(pb.SubmitRequest(task="tasks.add", options=options), NOW)
    assert submission.options == {
        "queue": "low-priority",
        "countdown": 3.5,
        "expires": NOW + timedelta(minutes=5),
        "priority": 0,
        "headers": {"tenant": "blue"},
    }


def test_eta_is_passed_as_an_aware_datetime() -> None:
    eta = NOW + timedelta(seconds=30)
    options = pb.SubmitOptions(eta=stamp(eta))
    assert parse_submit(pb.SubmitRequest(task="tasks.add", options=options), NOW).options == {
        "eta": eta
    }


def test_unset_priority_is_not_sent() -> None:
    options = pb.SubmitOptions(queue="q")
    assert "priority" not in parse_submit(pb.SubmitRequest(task="t", options=options), NOW).options


@pytest.mark.parametrize("name", ["tasks.add", "proj.tasks:Add", "a-b_c.d", "_private"])
def test_well_formed_names_are_accepted(name: str) -> None:
    assert parse_submit(pb.SubmitRequest(task=name), NOW).task == name


def test_task_ids_are_canonical_uuids() -> None:
    assert (
        parse_task_id("5E1A7B30-0F3C-4F0E-9C39-2D6B9F1B6C11")
        == "5e1a7b30-0f3c-4f0e-9c39-2d6b9f1b6c11"
    )
    with pytest.raises(InvalidArgument) as caught:
        parse_task_id("nope")
    assert caught.value.field == "task_id"


def test_results_encode_as_compact_json_without_escaping_text() -> None:
    assert dumps({"a": [1, 2.5, None], "b": "é"}) == '{"a":[1,2.5,null],"b":"é"}'


def test_retry_policy_maps_to_celery_retry_options() -> None:
    policy = pb.PublishRetryPolicy(
        max_retries=2, interval_start=Duration(nanos=100_000_000), interval_max=Duration(seconds=1)
    )
    options = parse_submit(
        pb.SubmitRequest(task="t", options=pb.SubmitOptions(retry_policy=policy)), NOW
    ).options
    assert options == {
        "retry_policy": {
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.0,
            "interval_max": 1.0,
        },
    }


def test_zero_retries_means_publish_once() -> None:
    options = pb.SubmitOptions(retry_policy=pb.PublishRetryPolicy(max_retries=0))
    parsed = parse_submit(pb.SubmitRequest(task="t", options=options), NOW).options
    assert parsed["retry_policy"]["max_retries"] == 0


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (pb.PublishRetryPolicy(max_retries=11), "options.retry_policy.max_retries"),
        (
            pb.PublishRetryPolicy(max_retries=1, interval_step=Duration(seconds=-1)),
            "options.retry_policy.interval_step",
        ),
    ],
)
def test_unreasonable_retry_policies_are_refused(policy: pb.PublishRetryPolicy, field: str) -> None:
    options = pb.SubmitOptions(retry_policy=policy)
    with pytest.raises(InvalidArgument) as caught:
        parse_submit(pb.SubmitRequest(task="t", options=options), NOW)
    assert caught.value.field == field
