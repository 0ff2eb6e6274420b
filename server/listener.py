"""The gRPC server itself: its interceptor, its limits and its port, with or without TLS."""

import logging
import resource
import socket
import ssl
from collections.abc import Callable

import grpc

from taskgate.server.auth import TokenAuthenticator
from taskgate.server.interceptors import GatewayInterceptor
from taskgate.server.limits import CallerConcurrencyLimit, CallLimits, ConcurrencyLimit, RateLimit
from taskgate.server.observability.grpc_metrics import GrpcMetrics
from taskgate.server.observability.tracing import TRACING
from taskgate.server.security_config import SecuritySettings
from taskgate.worker.factory import ConfigurationError

logger = logging.getLogger(__name__)

REUSE_PORT = "grpc.so_reuseport"
"""gRPC shares a port with any process that asks by default (SO_REUSEPORT): a stale
gateway would silently take part of the connections. Off, a taken port fails the start;
on only in the processes of one gateway (server/process_group.py)."""


def gateway_interceptor(
    security: SecuritySettings,
    authenticator: TokenAuthenticator,
    on_limit: Callable[[str, str], None] | None = None,
    metrics: GrpcMetrics | None = None,
) -> GatewayInterceptor:
    """Authentication and limits as configured, and `metrics` when given."""
    if not authenticator.enabled:
        logger.warning("no TASKGATE_TOKENS_FILE: every caller may call (authentication off)")
    rate = None
    if security.rate_per_second:
        burst = security.rate_burst or security.rate_per_second
        rate = RateLimit(security.rate_per_second, max(burst, 1.0))
    limits = CallLimits(
        ConcurrencyLimit(security.max_concurrent_calls),
        CallerConcurrencyLimit(
            security.max_calls_per_caller or max(security.max_concurrent_calls // 2, 1)
        ),
        rate,
        security.stream_write_timeout_seconds,
        security.max_concurrent_reads,
    )
    return GatewayInterceptor(authenticator, limits, on_limit, metrics)


def grpc_server(
    security: SecuritySettings,
    authenticator: TokenAuthenticator,
    max_wait_seconds: float,
    *,
    metrics: GrpcMetrics | None = None,
    on_limit: Callable[[str, str], None] | None = None,
    shared_port: bool = False,
) -> grpc.aio.Server:
    """An asyncio gRPC server with the gateway's interceptor and message and queue limits;
    `metrics` counts every call, refused ones too; `shared_port` when it is one process
    of a gateway's group."""
    return grpc.aio.server(
        interceptors=[
            *TRACING.outer_interceptors(),
            gateway_interceptor(security, authenticator, on_limit, metrics),
            *TRACING.inner_interceptors(),
        ],
        options=[
            ("grpc.max_receive_message_length", security.max_message_bytes),
            ("grpc.max_send_message_length", security.max_message_bytes),
            # gRPC core's own queue of calls not yet handed to a handler is far smaller
            # than our limit, and cancels the overflow silently: size it to match.
            ("grpc.server.max_pending_requests", security.max_concurrent_calls),
            ("grpc.server.max_pending_requests_hard_limit", 2 * security.max_concurrent_calls),
            (REUSE_PORT, int(shared_port)),
            *connection_options(security, max_wait_seconds),
        ],
        # A backstop under the interceptor's own limit (which answers with RetryInfo):
        # grpc refuses calls over it before anything of theirs is read.
        maximum_concurrent_rpcs=security.max_concurrent_calls + _BACKSTOP_HEADROOM,
    )


# --- connections: how long they may idle, live and stay silent (issue 11) ----------

_BACKSTOP_HEADROOM = 100  # health checks and reflection beside a full TaskService
_FILES_RESERVED = 256  # open files kept for Redis and broker pools, logs and TLS files
_KEEPALIVE_TIMEOUT_MS = 20_000
_AGE_GRACE_BEYOND_WAIT = 30.0


def max_connections(security: SecuritySettings) -> int:
    """The connection cap: as configured, or the open-file limit less a reserve."""
    if security.max_connections:
        return security.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(soft - _FILES_RESERVED, 16)


def connection_options(
    security: SecuritySettings, max_wait_seconds: float
) -> list[tuple[str, int]]:
    """gRPC core's options for connections; the README's Configuration gives the reasons."""
    grace = security.connection_age_grace_seconds or max_wait_seconds + _AGE_GRACE_BEYOND_WAIT

    def ms(seconds: float) -> int:
        return max(int(seconds * 1000), 1)

    return [
        ("grpc.max_allowed_incoming_connections", max_connections(security)),
        ("grpc.server_handshake_timeout_ms", ms(security.handshake_timeout_seconds)),
        ("grpc.max_connection_idle_ms", ms(security.connection_idle_seconds)),
        ("grpc.max_connection_age_ms", ms(security.connection_max_age_seconds)),
        ("grpc.max_connection_age_grace_ms", ms(grace)),
        ("grpc.keepalive_time_ms", ms(security.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        # Clients (Go, Java, Envoy) that ping idle connections every 10-30 s are
        # told GOAWAY "too_many_pings" under gRPC's 5-minute default.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(security.min_client_ping_seconds)),
        # With BDP probing on, gRPC widens every stream's window until whole messages
        # arrive before anyone reads them: a flood then held gigabytes. Off, a stream
        # not yet read holds 64 KiB, and a read opens the window for its one message.
        ("grpc.http2.bdp_probe", 0),
    ]


def bind(
    server: grpc.aio.Server, listen: str, security: SecuritySettings, shared_port: bool = False
) -> int:
    """Listen on `listen`, with TLS (and client certificates) when configured.

    A port another process holds is a ConfigurationError naming the address, found
    first with a plain socket: gRPC says only "Failed to bind", and logs it. A process
    of a group (`shared_port`) skips that check: the group's parent made it, and holds
    the port for the group since.
    """
    taken = None if shared_port else bind_failure(listen)
    try:
        if taken is None:
            return _add_port(server, listen, security)
    except RuntimeError:
        taken = "gRPC could not listen there"
    raise port_taken(listen, taken)


def port_taken(listen: str, reason: str) -> ConfigurationError:
    """The one-line refusal of a port the gateway cannot have."""
    return ConfigurationError(
        f"TASKGATE_LISTEN={listen!r}: {reason}; expected a free local address "
        "(is another gateway or server already running there?)"
    )


def host_and_port(listen: str) -> tuple[str, int]:
    """`listen` as a socket address: the host without IPv6 brackets, the port a number."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def socket_for(host: str) -> socket.socket:
    """A TCP socket of the family of `host`."""
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)


def bind_failure(listen: str) -> str | None:
    """Why `listen` cannot be bound, as the operating system says it; None when it can."""
    host, port = host_and_port(listen)
    with socket_for(host) as probe:
        # As gRPC does: connections of an earlier process in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
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
