"""Tokens change without a restart (SIGHUP, or a change of the file), and a bad new file,
an empty list included, keeps the tokens in force: the gateway never opens."""

import json
import re
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scripts.stack import Gateway
from taskgate.server.auth import digest
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import poll
from tests.grpc_helpers import call_error

OLD = "old-token-0123456789abcdef"
NEW = "new-token-0123456789abcdef"


def write_tokens(path: Path, *tokens: str) -> None:
    """Replace the tokens file at once (as a deploy tool does): a rename, never half a file."""
    entries = [{"name": t.split("-")[0], "sha256": digest(t).hex(), "tasks": ["*"]} for t in tokens]
    staged = path.with_suffix(".new")
    staged.write_text(json.dumps({"tokens": entries}))
    staged.replace(path)


@dataclass
class Reloadable:
    """A gateway with a tokens file, and a client for it."""

    gateway: Gateway
    tokens: Path
    stub: pb_grpc.TaskServiceStub

    def code(self, token: str | None) -> grpc.StatusCode:
        """What GetStatus of an unknown id answers with `token`: NOT_FOUND once let in."""
        metadata = () if token is None else (("authorization", f"Bearer {token}"),)
        request = pb.GetStatusRequest(task_id=str(uuid.uuid4()))
        error = call_error(lambda: self.stub.GetStatus(request, metadata=metadata, timeout=10))
        return error.code()

    def reloads(self, pattern: str) -> int:
        """How many reload lines matching `pattern` the gateway has logged."""
        return len(re.findall(pattern, self.gateway.log_text()))


@pytest.fixture
def reloadable(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Reloadable]:
    tokens = tmp_path / "tokens.json"
    write_tokens(tokens, OLD)
    gateway = Gateway({**stack_env, "TASKGATE_TOKENS_FILE": str(tokens)}, tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            yield Reloadable(gateway, tokens, pb_grpc.TaskServiceStub(channel))
    finally:
        gateway.stop()


def test_sighup_swaps_the_tokens(reloadable: Reloadable) -> None:
    assert reloadable.code(OLD) == grpc.StatusCode.NOT_FOUND
    assert reloadable.code(NEW) == grpc.StatusCode.UNAUTHENTICATED
    write_tokens(reloadable.tokens, NEW)
    reloadable.gateway.signal(signal.SIGHUP)
    poll(lambda: reloadable.code(NEW) == grpc.StatusCode.NOT_FOUND, "the new token let in", 10)
    assert reloadable.code(OLD) == grpc.StatusCode.UNAUTHENTICATED
    assert reloadable.gateway.alive()


def test_a_changed_file_is_picked_up_without_a_signal(reloadable: Reloadable) -> None:
    write_tokens(reloadable.tokens, OLD, NEW)
    poll(lambda: reloadable.code(NEW) == grpc.StatusCode.NOT_FOUND, "the new token let in", 10)
    assert reloadable.code(OLD) == grpc.StatusCode.NOT_FOUND
    assert reloadable.reloads(r"tokens reloaded \(the file changed\)") == 1


@pytest.mark.parametrize("body", ['{"tokens": []}', '{"tokens": [', '{"tokens": [{"name": "x"}]}'])
def test_a_bad_new_file_keeps_the_tokens_in_force(reloadable: Reloadable, body: str) -> None:
    """Revoking the last token, or a broken deploy, must never open the gateway."""
    staged = reloadable.tokens.with_suffix(".new")
    staged.write_text(body)
    staged.replace(reloadable.tokens)
    reloadable.gateway.signal(signal.SIGHUP)
    poll(lambda: reloadable.reloads(r"tokens not reloaded \(SIGHUP\)") == 1, "the refusal logged")
    assert "TASKGATE_TOKENS_FILE" in reloadable.gateway.log_text()
    assert reloadable.code(None) == grpc.StatusCode.UNAUTHENTICATED
    assert reloadable.code(NEW) == grpc.StatusCode.UNAUTHENTICATED
    assert reloadable.code(OLD) == grpc.StatusCode.NOT_FOUND
