"""The machine's RabbitMQ (127.0.0.1:5672, guest/guest) for the broker tests: private vhosts."""

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl` with `args`; what it printed."""
    done = subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)
    return done.stdout.decode()


def private_vhost() -> Iterator[str]:
    """Make a vhost for guest, yield its name, delete it; without RabbitMQ the test
    skips, except in CI where it fails."""
    if shutil.which("rabbitmqctl") is None:
        if os.environ.get("CI"):
            pytest.fail("RabbitMQ (rabbitmqctl) is required in CI")
        pytest.skip("RabbitMQ is not installed here")
    name = f"taskgate-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    rabbitmqctl("delete_vhost", name)
