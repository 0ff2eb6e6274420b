"""The tokens file and `python -m taskgate.server.auth` (no server needed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.stack import REPO_ROOT
from taskgate.server.auth import ANONYMOUS, TokenAuthenticator
from taskgate.server.errors import PermissionDenied, Unauthenticated


def test_a_new_token_and_its_entry_authenticate(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "taskgate.server.auth", "billing", "billing.*"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    token = printed[0].rsplit(" ", 1)[1]
    entry = json.loads(printed[1].split(": ", 1)[1])
    assert token not in json.dumps(entry)
    (tmp_path / "tokens.json").write_text(json.dumps({"tokens": [entry]}))
    authenticator = TokenAuthenticator.from_file(tmp_path / "tokens.json")
    caller = authenticator.authenticate([("authorization", f"Bearer {token}")])
    assert caller.name == "billing"
    caller.require_task("billing.invoice")
    with pytest.raises(PermissionDenied):
        caller.require_task("tasks.add")
    with pytest.raises(PermissionDenied):
        caller.require_cancel()
    with pytest.raises(Unauthenticated):
        authenticator.authenticate([("authorization", f"Bearer {token}x")])


def test_without_a_tokens_file_everyone_is_anonymous() -> None:
    authenticator = TokenAuthenticator.from_file(None)
    assert not authenticator.enabled
    assert authenticator.authenticate([]) is ANONYMOUS
