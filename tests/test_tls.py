"""TLS and mutual TLS: who can reach a gateway that has a certificate, and who cannot.

A throwaway CA issues the gateway's certificate (SAN IP 127.0.0.1 and DNS
localhost) and a client certificate; a second, unrelated CA plays the stranger.
A refused call must never reach the servicer: each refusal test sends its
Submit with an idempotency key, then a trusted client reuses that key with a
different request, which would be ALREADY_EXISTS had the refused call arrived.
"""

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.stack import REPO_ROOT, Gateway, ManagedProcess
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import call_error
from tests.tls_helpers import Authority, Issued

CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Pki:
    """The test CA, what it issued, and a stranger CA with a client certificate of its own."""

    ca: Authority
    server: Issued
    client: Issued
    stranger: Authority
    stranger_client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory, "taskgate-test")
    stranger = Authority(directory, "stranger")
    return Pki(
        ca=ca,
        server=ca.issue("gateway", dns=("localhost",), ips=("127.0.0.1",)),
        client=ca.issue("caller", client=True),
        stranger=stranger,
        stranger_client=stranger.issue("caller", client=True),
    )


def _tls_env(stack_env: dict[str, str], pki: Pki, *, mutual: bool) -> dict[str, str]:
    env = {
        **stack_env,
        "TASKGATE_TLS_CERT": str(pki.server.cert),
        "TASKGATE_TLS_KEY": str(pki.server.key),
    }
    if mutual:
        env["TASKGATE_TLS_CLIENT_CA"] = str(pki.ca.cert)
    return env


@pytest.fixture(scope="module")
def tls_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    stack_env: dict[str, str],
    worker: ManagedProcess,
    pki: Pki,
) -> Iterator[Gateway]:
    """A gateway that serves TLS only."""
    gateway = Gateway(_tls_env(stack_env, pki, mutual=False), tmp_path_factory.mktemp("tls"))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def mtls_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    stack_env: dict[str, str],
    worker: ManagedProcess,
    pki: Pki,
) -> Iterator[Gateway]:
    """A gateway that requires a client certificate signed by the test CA."""
    gateway = Gateway(_tls_env(stack_env, pki, mutual=True), tmp_path_factory.mktemp("mtls"))
    yield gateway
    gateway.stop()


def _port(gateway: Gateway) -> str:
    return gateway.address.rpartition(":")[2]


def _trusting(pki: Pki, client: Issued | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem(),
        private_key=client.key_pem(),
        certificate_chain=client.cert_pem(),
    )


def _add_round_trip(channel: grpc.Channel) -> None:
    """Submit tasks.add(2, 3), read its result, and check the health service over `channel`."""
    stub = pb_grpc.TaskServiceStub(channel)
    submitted = stub.Submit(
        pb.SubmitRequest(task="tasks.add", args_json="[2, 3]"), timeout=CALL_TIMEOUT
    )
    result = stub.GetResult(
        pb.GetResultRequest(task_id=submitted.task_id, wait=Duration(seconds=20)), timeout=30
    )
    assert (result.ready, result.result_json) == (True, "5")
    health: Any = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _assert_refused(refused: grpc.Channel, trusted: grpc.Channel) -> None:
    """A Submit over `refused` fails UNAVAILABLE and never reaches the gateway's servicer."""
    key = f"tls-refused-{uuid.uuid4()}"
    attempt = pb.SubmitRequest(task="tasks.add", args_json="[1, 1]", idempotency_key=key)
    error = call_error(lambda: pb_grpc.TaskServiceStub(refused).Submit(attempt, timeout=5))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    other = pb.SubmitRequest(task="tasks.add", args_json="[2, 2]", idempotency_key=key)
    # ALREADY_EXISTS here would mean the refused call was served after all.
    reply = pb_grpc.TaskServiceStub(trusted).Submit(other, timeout=CALL_TIMEOUT)
    assert not reply.deduplicated


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_client_that_trusts_the_ca_is_served(tls_gateway: Gateway, pki: Pki, host: str) -> None:
    with grpc.secure_channel(f"{host}:{_port(tls_gateway)}", _trusting(pki)) as channel:
        _add_round_trip(channel)


def test_a_plaintext_client_gets_no_answer_from_a_tls_port(tls_gateway: Gateway, pki: Pki) -> None:
    with (
        grpc.insecure_channel(tls_gateway.address) as plaintext,
        grpc.secure_channel(tls_gateway.address, _trusting(pki)) as trusted,
    ):
        _assert_refused(plaintext, trusted)


@pytest.mark.parametrize("roots", ["stranger CA", "system roots"])
def test_a_client_that_does_not_trust_the_ca_cannot_connect(
    tls_gateway: Gateway, pki: Pki, roots: str
) -> None:
    stranger_roots = pki.stranger.cert_pem() if roots == "stranger CA" else None
    credentials = grpc.ssl_channel_credentials(root_certificates=stranger_roots)
    with (
        grpc.secure_channel(tls_gateway.address, credentials) as distrustful,
        grpc.secure_channel(tls_gateway.address, _trusting(pki)) as trusted,
    ):
        _assert_refused(distrustful, trusted)


def test_mutual_tls_serves_a_client_with_a_certificate_from_the_ca(
    mtls_gateway: Gateway, pki: Pki
) -> None:
    with grpc.secure_channel(mtls_gateway.address, _trusting(pki, pki.client)) as channel:
        _add_round_trip(channel)


@pytest.mark.parametrize("caller", ["no client certificate", "stranger's certificate", "plaintext"])
def test_mutual_tls_refuses_a_client_without_a_valid_certificate(
    mtls_gateway: Gateway, pki: Pki, caller: str
) -> None:
    if caller == "plaintext":
        refused = grpc.insecure_channel(mtls_gateway.address)
    else:
        client = None if caller == "no client certificate" else pki.stranger_client
        refused = grpc.secure_channel(mtls_gateway.address, _trusting(pki, client))
    with (
        refused,
        grpc.secure_channel(mtls_gateway.address, _trusting(pki, pki.client)) as trusted,
    ):
        _assert_refused(refused, trusted)


def _run_server(stack_env: dict[str, str], tls: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m taskgate.server` with these TLS settings; it must exit on its own."""
    env = {**stack_env, "TASKGATE_LISTEN": "127.0.0.1:0", **tls}
    for name in ("TASKGATE_TLS_CERT", "TASKGATE_TLS_KEY", "TASKGATE_TLS_CLIENT_CA"):
        env.setdefault(name, "")
    return subprocess.run(
        [sys.executable, "-m", "taskgate.server"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (("cert",), "TASKGATE_TLS_KEY"),
        (("key",), "TASKGATE_TLS_CERT"),
        (("client_ca",), "TASKGATE_TLS_CLIENT_CA"),
        (("client_ca", "cert"), "TASKGATE_TLS_KEY"),
        (("client_ca", "key"), "TASKGATE_TLS_CERT"),
        (("missing_cert", "key"), "TASKGATE_TLS_CERT"),
    ],
)
def test_incomplete_tls_settings_stop_the_gateway_with_a_configuration_error(
    stack_env: dict[str, str], pki: Pki, given: tuple[str, ...], named: str
) -> None:
    files = {
        "cert": ("TASKGATE_TLS_CERT", str(pki.server.cert)),
        "key": ("TASKGATE_TLS_KEY", str(pki.server.key)),
        "client_ca": ("TASKGATE_TLS_CLIENT_CA", str(pki.ca.cert)),
        "missing_cert": ("TASKGATE_TLS_CERT", str(pki.server.cert.with_name("absent.pem"))),
    }
    finished = _run_server(stack_env, dict(files[name] for name in given))
    assert finished.returncode != 0
    assert "configuration error" in finished.stderr, finished.stderr
    assert named in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr
    assert "listening" not in finished.stderr


@pytest.mark.parametrize("broken", ["not a certificate", "key of another certificate"])
def test_an_unusable_certificate_stops_the_gateway_with_a_configuration_error(
    stack_env: dict[str, str], pki: Pki, tmp_path: Path, broken: str
) -> None:
    cert, key = pki.server.cert, pki.server.key
    if broken == "not a certificate":
        cert = tmp_path / "garbage.pem"
        cert.write_text(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        )
    else:
        key = pki.client.key
    finished = _run_server(
        stack_env, {"TASKGATE_TLS_CERT": str(cert), "TASKGATE_TLS_KEY": str(key)}
    )
    assert finished.returncode != 0
    assert "configuration error" in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr
