"""The gRPC server itself: its interceptor, its limits and its port, with or without TLS."""

import logging
import socket
import ssl

import grpc

from server.auth import TokenAuthenticator
from server.config import SecuritySettings
from server.interceptors import GatewayInterceptor
from server.limits import ConcurrencyLimit, RateLimit
from worker.factory import ConfigurationError

logger = logging.getLogger(__name__)

NO_SHARED_PORT = ("grpc.so_reuseport", 0)
"""gRPC shares a port with any process that asks by default (SO_REUSEPORT): a stale
gateway would silently take part of the connections. Off, a taken port fails the start."""


def gateway_interceptor(
    security: SecuritySettings, authenticator: TokenAuthenticator
) -> GatewayInterceptor:
    """Authentication and limits as configured."""
    if not authenticator.enabled:
        logger.warning("no TASKGATE_TOKENS_FILE: every caller may call (authentication off)")
    rate = None
    if security.rate_per_second:
        burst = security.rate_burst or security.rate_per_second
        rate = RateLimit(security.rate_per_second, max(burst, 1.0))
    return GatewayInterceptor(authenticator, ConcurrencyLimit(security.max_concurrent_calls), rate)


def grpc_server(security: SecuritySettings, authenticator: TokenAuthenticator) -> grpc.aio.Server:
    """An asyncio gRPC server with the gateway's interceptor and message and queue limits."""
    return grpc.aio.server(
        interceptors=[gateway_interceptor(security, authenticator)],
        options=[
            ("grpc.max_receive_message_length", security.max_message_bytes),
            ("grpc.max_send_message_length", security.max_message_bytes),
            # gRPC core's own queue of calls not yet handed to a handler is far smaller
            # than our limit, and cancels the overflow silently: size it to match.
            ("grpc.server.max_pending_requests", security.max_concurrent_calls),
            ("grpc.server.max_pending_requests_hard_limit", 2 * security.max_concurrent_calls),
            NO_SHARED_PORT,
        ],
    )


def bind(server: grpc.aio.Server, listen: str, security: SecuritySettings) -> int:
    """Listen on `listen`, with TLS (and client certificates) when configured.

    A port another process holds is a ConfigurationError naming the address, found
    first with a plain socket: gRPC says only "Failed to bind", and logs it.
    """
    taken = bind_failure(listen)
    try:
        if taken is None:
            return _add_port(server, listen, security)
    except RuntimeError:
        taken = "gRPC could not listen there"
    raise ConfigurationError(
        f"TASKGATE_LISTEN={listen!r}: {taken}; expected a free local address "
        "(is another gateway or server already running there?)"
    )


def bind_failure(listen: str) -> str | None:
    """Why `listen` cannot be bound, as the operating system says it; None when it can."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As gRPC does: connections of an earlier process in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _add_port(server: grpc.aio.Server, listen: str, security: SecuritySettings) -> int:
    if security.tls_cert is None or security.tls_key is None:
        return server.add_insecure_port(listen)
    try:
        # gRPC only says "Failed to bind" for a bad certificate or key: check them first.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            security.tls_cert, security.tls_key
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"TASKGATE_TLS_CERT and TASKGATE_TLS_KEY are not a PEM certificate and its key: {exc}"
        ) from None
    credentials = grpc.ssl_server_credentials(
        [(security.tls_key.read_bytes(), security.tls_cert.read_bytes())],
        root_certificates=security.tls_client_ca.read_bytes() if security.tls_client_ca else None,
        require_client_auth=security.tls_client_ca is not None,
    )
    return server.add_secure_port(listen, credentials)
