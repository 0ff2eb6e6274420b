"""Hypothesis strategies for hostile TaskService requests, and the codes each RPC may answer.

The strategies cover what a careless or malicious client can put in each field:
names and ids of any text, JSON that is valid, invalid, huge or deeply nested,
and calling options inside and outside their bounds. Times stay within what a
timestamp can say (years 1 to 9999) and durations within 10^10 seconds; the
values beyond that are pinned one by one in tests/test_hostile_inputs.py, because
they are known to crash the gateway.
"""

import json
import re
import time
import uuid
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

from taskgate.v1 import task_service_pb2 as pb

Code = grpc.StatusCode

# The codes the proto lists on each RPC. Every RPC may also answer UNAUTHENTICATED,
# RESOURCE_EXHAUSTED and INVALID_ARGUMENT (bytes that are not the request message; the
# service comment), and DEADLINE_EXCEEDED. INTERNAL is listed too, as "an unexpected
# server fault": a bug, so never allowed here.
_EVERY_CALL = {
    Code.OK,
    Code.UNAUTHENTICATED,
    Code.RESOURCE_EXHAUSTED,
    Code.DEADLINE_EXCEEDED,
    Code.INVALID_ARGUMENT,
}
_SUBMIT = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.PERMISSION_DENIED}
_READ = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.UNAVAILABLE}

DOCUMENTED: dict[str, frozenset[grpc.StatusCode]] = {
    "Submit": frozenset(_EVERY_CALL | _SUBMIT | {Code.UNAVAILABLE}),
    "GetStatus": frozenset(_EVERY_CALL | _READ),
    "GetResult": frozenset(_EVERY_CALL | _READ),
    "Execute": frozenset(_EVERY_CALL | _SUBMIT | _READ),
    "SubmitBatch": frozenset(_EVERY_CALL | {Code.INVALID_ARGUMENT}),
    "Cancel": frozenset(
        _EVERY_CALL
        | {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.PERMISSION_DENIED, Code.UNAVAILABLE}
    ),
    "WatchStatus": frozenset(_EVERY_CALL | _READ),
    "ListTasks": frozenset(_EVERY_CALL | {Code.UNAVAILABLE}),
}

# Every submission the gateway accepts from these strategies goes to this queue, which
# no worker reads: the session's worker never runs hostile input, and tests stay fast.
VOID_QUEUE = "hostile-void"
_VALID_QUEUE = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"
_RUN = uuid.uuid4().hex[:8]  # keeps this session's idempotency keys apart from others'


def _repeated(alphabet: st.SearchStrategy[str], longest: int) -> st.SearchStrategy[str]:
    """Long strings, cheaply: a short random piece repeated up to `longest` characters."""
    return st.builds(
        lambda piece, length: (piece * length)[:length],
        st.text(alphabet, min_size=1, max_size=4),
        st.integers(200, longest),
    )


_any_char = st.characters(codec="utf-8")
_name_char = st.sampled_from(_NAME_CHARS)

_ODD_NAMES = [
    "tasks.add", "tasks.fail", "tasks.sleep", "tasks.subtraction", "tasks.missing", "tasks.",
    "tasks.*", "celery.backend_cleanup", "celery.chord_unlock", "", " ", "tasks.add\x00",
    "tasks.add\n", "TASKS.ADD", "\uff54\uff41\uff53\uff4b\uff53.add", "tasks.\u0430dd",
    "tasks." + "a" * 249, "tasks." + "a" * 250, "1tasks.add", "-", ".",
]  # fmt: skip
task_names = st.one_of(
    st.sampled_from(_ODD_NAMES),
    st.text(_any_char, max_size=30),
    st.text(_name_char, max_size=300),
    st.builds("tasks.{}".format, st.text(_name_char, max_size=260)),
    _repeated(_any_char, 20_000),
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_any_char, max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


def _nested(depth: int, kind: str, closed: bool) -> str:
    opener, leaf, closer = ("[", "1", "]") if kind == "array" else ('{"a":', "1", "}")
    return opener * depth + leaf + (closer * depth if closed else "")


_MALFORMED = [
    " ", "NaN", "[NaN]", "[Infinity]", "[-Infinity]", "{", "[", "[1,]", '{"a":}', "\ufeff[]",
    '["\\ud800"]', "null", "true", "1", '"text"', "[1]]", "{}{}", "[1] [2]", "\x00",
    '{"a":1,"a":2}', "[" + "1" * 4301 + "]", "[" * 65 + "]" * 65, "//[]",
]  # fmt: skip
_deep = st.builds(
    _nested, st.integers(1, 100_000), st.sampled_from(["array", "object"]), st.booleans()
)
_huge = st.builds(
    lambda size: json.dumps(["x" * size]), st.integers(1024 * 1024 - 10, 1024 * 1024 + 10)
)
_json_text = st.one_of(
    st.just(""),
    st.sampled_from(_MALFORMED),
    json_values.map(json.dumps),
    st.text(_any_char, max_size=40),
    _deep,
    _huge,
)
args_json = st.one_of(st.lists(json_values, max_size=4).map(json.dumps), _json_text)
kwargs_json = st.one_of(
    st.dictionaries(st.text(_any_char, max_size=8), json_values, max_size=4).map(json.dumps),
    _json_text,
)

durations = st.builds(
    Duration,
    seconds=st.one_of(st.integers(-3, 3), st.integers(-(10**10), 10**10)),
    nanos=st.integers(-999_999_999, 999_999_999),
)
timestamps = st.builds(
    Timestamp,
    seconds=st.integers(-62_135_596_800, 253_402_300_799),  # years 1 to 9999
    nanos=st.integers(0, 999_999_999),
)
_header_names = st.one_of(
    st.sampled_from(["id", "task", "eta", "retries", "root_id", "argsrepr", "x-trace", "a"]),
    st.text(_any_char, max_size=12),
    st.text(_name_char, min_size=1, max_size=300),
)
_header_values = st.one_of(st.text(_any_char, max_size=20), _repeated(_any_char, 5000))
retry_policies = st.builds(
    pb.PublishRetryPolicy,
    max_retries=st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1)),
    interval_start=durations,
    interval_step=durations,
    interval_max=durations,
)


def _future(low: int, high: int) -> st.SearchStrategy[Timestamp]:
    return st.builds(
        lambda ahead: Timestamp(seconds=int(time.time()) + ahead), st.integers(low, high)
    )


_safe_header_names = st.text(_name_char, min_size=1, max_size=12).map("x-{}".format)

# Each option as a careful caller sets it, and as a hostile one does.
_OPTION_VALUES: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "queue": (
        st.text(_name_char, min_size=1, max_size=20),
        st.one_of(st.text(_any_char, min_size=1, max_size=20), _repeated(_name_char, 300)),
    ),
    "headers": (
        st.dictionaries(_safe_header_names, st.text(_any_char, max_size=20), max_size=3),
        st.dictionaries(_header_names, _header_values, min_size=1, max_size=40),
    ),
    "countdown": (st.builds(Duration, seconds=st.integers(0, 3600)), durations),
    "eta": (_future(0, 10**6), timestamps),
    "expires": (_future(60, 10**6), timestamps),
    "priority": (st.integers(0, 255), st.integers(-(2**31), 2**31 - 1)),
    "retry_policy": (
        st.builds(
            pb.PublishRetryPolicy,
            max_retries=st.integers(0, 10),
            interval_start=st.builds(Duration, nanos=st.integers(0, 999_999_999)),
        ),
        retry_policies,
    ),
}
_MESSAGE_OPTIONS = ("countdown", "eta", "expires", "retry_policy")


def _set_option(options: pb.SubmitOptions, name: str, value: Any) -> None:
    if name == "headers":
        options.headers.clear()
        options.headers.update(value)
    elif name in _MESSAGE_OPTIONS:
        getattr(options, name).CopyFrom(value)
    else:
        setattr(options, name, value)


idempotency_keys = st.one_of(
    st.just(""),
    st.sampled_from(["one", "two"]).map(f"hostile-{_RUN}-".__add__),
    st.text(_any_char, max_size=300).map(f"hostile-{_RUN}-".__add__),
)
_plausible_fields: dict[str, st.SearchStrategy[str]] = {
    "task": st.sampled_from(["tasks.add", "tasks.fail", "tasks.sleep", "tasks.missing"]),
    "args_json": st.lists(json_values, max_size=3).map(json.dumps),
    "kwargs_json": st.just("") | st.dictionaries(st.text(max_size=6), json_values).map(json.dumps),
    "idempotency_key": st.just("") | st.uuids().map(f"hostile-{_RUN}-{{}}".format),
}
_hostile_fields: dict[str, st.SearchStrategy[str]] = {
    "task": task_names,
    "args_json": args_json,
    "kwargs_json": kwargs_json,
    "idempotency_key": idempotency_keys,
}


@st.composite
def submit_requests(draw: st.DrawFn) -> pb.SubmitRequest:
    """A careful request; or one with a single hostile field; or hostile through and through.

    A single bad field among good ones reaches the checks that come late; all-bad
    requests try the early ones. Whatever the gateway accepts goes to VOID_QUEUE.
    """
    mode = draw(st.sampled_from(["careful", "one hostile field", "hostile"]))
    hostile_field = draw(st.sampled_from([*_plausible_fields, *_OPTION_VALUES]))
    request = pb.SubmitRequest()
    for name in _plausible_fields:
        hostile = mode == "hostile" or (mode != "careful" and name == hostile_field)
        setattr(request, name, draw((_hostile_fields if hostile else _plausible_fields)[name]))
    for name, (careful, hostile_values) in _OPTION_VALUES.items():
        if mode == "hostile" or (mode != "careful" and name == hostile_field):
            _set_option(request.options, name, draw(hostile_values))
        elif draw(st.integers(0, 3)) == 0:  # a careful caller sets an option now and then
            _set_option(request.options, name, draw(careful))
    return quarantined(request)


def quarantined(request: pb.SubmitRequest) -> pb.SubmitRequest:
    """`request`, sent to the void queue should the gateway accept it.

    A queue name the gateway would refuse is kept, so that its check is still tested.
    """
    copy = pb.SubmitRequest()
    copy.CopyFrom(request)
    if not copy.options.queue or _VALID_QUEUE.fullmatch(copy.options.queue):
        copy.options.queue = VOID_QUEUE
    return copy


waits = st.one_of(
    st.none(),
    st.builds(Duration, seconds=st.integers(-2, 0), nanos=st.integers(-999_999_999, 300_000_000)),
    st.builds(Duration, seconds=st.integers(-(10**10), 10**10)),
)


_ODD_IDS = [
    "", " ", "0" * 32, "00000000-0000-0000-0000-000000000000", "*", "../../x",
    "celery-task-meta-*", "0x" + "f" * 30, "1_2" + "3" * 29, str(uuid.uuid4())[:-1],
]  # fmt: skip


def _id_variants(task_id: str) -> list[str]:
    plain = uuid.UUID(task_id)
    return [task_id, task_id.upper(), f"{{{task_id}}}", plain.hex, plain.urn, f" {task_id} "]


def task_ids(known: list[str]) -> st.SearchStrategy[str]:
    """Half the time a real task's id, in a spelling a UUID parser accepts; else anything."""
    spellings = st.sampled_from([variant for task_id in known for variant in _id_variants(task_id)])
    anything = st.one_of(
        st.uuids().map(str),
        st.sampled_from(_ODD_IDS),
        st.text(_any_char, max_size=40),
        _repeated(_any_char, 10_000),
    )
    return st.booleans().flatmap(lambda real: spellings if real else anything)


def deadline(longest: float) -> st.SearchStrategy[float]:
    """A client deadline in seconds, from far too short to `longest`."""
    return st.floats(0.001, longest)
