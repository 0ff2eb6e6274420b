"""The test stack's processes (scripts/stack.py): a start that fails leaves none behind."""

import re
from pathlib import Path

import pytest

from scripts.stack import ManagedProcess, StackError


def test_a_process_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    """Nobody holds a process whose start failed, so nobody else could stop it: a
    gateway left running would hold its port and CPU through the rest of the suite."""
    process = ManagedProcess("sleeper", ["sleep", "60"], {}, tmp_path)
    with pytest.raises(StackError, match="not ready"):
        process.started(re.compile("never printed"), timeout=0.5)
    assert not process.alive()
    assert process.popen.returncode is not None
