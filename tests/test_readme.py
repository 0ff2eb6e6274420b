"""The README's grpcurl examples are requests the contract accepts, field for field."""

import re

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from scripts.stack import REPO_ROOT
from taskgate.v1 import task_service_pb2 as pb

_CALL = re.compile(r"grpcurl -plaintext -d '(?P<body>[^']*)'.*?TaskService/(?P<method>\w+)", re.S)


def _examples() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "README.md").read_text()
    return [(match["method"], match["body"]) for match in _CALL.finditer(text)]


def test_the_readme_shows_every_rpc() -> None:
    methods = {method for method, _ in _examples()}
    assert methods == set(pb.DESCRIPTOR.services_by_name["TaskService"].methods_by_name)


@pytest.mark.parametrize(("method", "body"), _examples())
def test_each_example_parses_as_its_request(method: str, body: str) -> None:
    request_type: type[Message] = getattr(pb, f"{method}Request")
    request = json_format.Parse(body, request_type())
    assert request.ByteSize() > 0 or body.strip() == "{}"
