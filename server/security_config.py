"""Who may call the gateway, over what, and how much: `SecuritySettings`, read once from
the environment (the README's Security section and Configuration give the reasons)."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskgate.server.env import SettingsError, file_path, number, whole


@dataclass(frozen=True)
class SecuritySettings:
    """Who may call, over what, and how much; see the README's Security section."""

    tokens_file: Path | None = None
    """`TASKGATE_TOKENS_FILE`: bearer-token digests and rights; unset means no authentication."""

    tls_cert: Path | None = None
    """`TASKGATE_TLS_CERT`: the server certificate chain (PEM); with the key, turns TLS on."""

    tls_key: Path | None = None
    """`TASKGATE_TLS_KEY`: the server's private key (PEM)."""

    tls_client_ca: Path | None = None
    """`TASKGATE_TLS_CLIENT_CA`: CA certificates (PEM); set, every client must present a
    certificate they signed (mutual TLS)."""

    max_message_bytes: int = 4 * 1024 * 1024
    """`TASKGATE_MAX_MESSAGE_BYTES`: the largest request accepted (RESOURCE_EXHAUSTED above)."""

    max_concurrent_calls: int = 10_000
    """`TASKGATE_MAX_CONCURRENT_CALLS`: calls in progress at once, waiting ones included."""

    rate_per_second: float = 0.0
    """`TASKGATE_RATE_LIMIT`: calls a second allowed to each caller; 0 means no limit."""

    rate_burst: float = 0.0
    """`TASKGATE_RATE_BURST`: calls a caller may make at once above its rate (default: the rate)."""

    # --- hostile callers: connections, per-caller concurrency, streams (issue 11) ---

    max_calls_per_caller: int = 0
    """`TASKGATE_MAX_CALLS_PER_CALLER`: calls in progress at once for one caller (a token;
    the peer's address without authentication), so that one cannot hold every slot;
    0 means half of TASKGATE_MAX_CONCURRENT_CALLS."""

    max_connections: int = 0
    """`TASKGATE_MAX_CONNECTIONS`: open client connections; 0 means the open-file limit
    less a reserve for Redis, the broker and logs."""

    handshake_timeout_seconds: float = 10.0
    """`TASKGATE_HANDSHAKE_TIMEOUT`: how long a new connection may take to finish TLS and
    send its HTTP/2 settings."""

    connection_idle_seconds: float = 300.0
    """`TASKGATE_CONNECTION_IDLE`: a connection without calls for this long is closed."""

    connection_max_age_seconds: float = 1800.0
    """`TASKGATE_CONNECTION_MAX_AGE`: connections are asked to reconnect after this long,
    so that clients rebalance over the replicas behind an L4 balancer."""

    connection_age_grace_seconds: float = 0.0
    """`TASKGATE_CONNECTION_AGE_GRACE`: how long calls may finish on a connection past its
    age; 0 means TASKGATE_MAX_WAIT plus 30 s, so no wait is cut off."""

    keepalive_seconds: float = 60.0
    """`TASKGATE_KEEPALIVE`: the gateway pings a connection silent this long, and drops it
    when no answer comes within 20 s: callers that vanished free their calls."""

    min_client_ping_seconds: float = 5.0
    """`TASKGATE_MIN_CLIENT_PING`: the shortest interval between a client's keepalive
    pings that is tolerated (meshes ping every 10-30 s)."""

    stream_write_timeout_seconds: float = 30.0
    """`TASKGATE_STREAM_WRITE_TIMEOUT`: a WatchStatus stream whose client takes no message
    for this long is ended."""

    max_concurrent_reads: int = 32
    """`TASKGATE_MAX_CONCURRENT_READS`: requests received at once; the others wait, unread,
    so that a flood holds at most this many times TASKGATE_MAX_MESSAGE_BYTES."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SecuritySettings":
        """Read the security settings; a certificate without its key is an error."""
        settings = cls(
            tokens_file=file_path(env, "TASKGATE_TOKENS_FILE"),
            tls_cert=file_path(env, "TASKGATE_TLS_CERT"),
            tls_key=file_path(env, "TASKGATE_TLS_KEY"),
            tls_client_ca=file_path(env, "TASKGATE_TLS_CLIENT_CA"),
            max_message_bytes=whole(env, "TASKGATE_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            max_concurrent_calls=whole(
                env, "TASKGATE_MAX_CONCURRENT_CALLS", cls.max_concurrent_calls
            ),
            rate_per_second=number(env, "TASKGATE_RATE_LIMIT", 0.0, zero_ok=True),
            rate_burst=number(env, "TASKGATE_RATE_BURST", 0.0, zero_ok=True),
            **_hostile_caller_settings(env),
        )
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise SettingsError("TASKGATE_TLS_CERT and TASKGATE_TLS_KEY go together")
        if settings.tls_client_ca is not None and settings.tls_cert is None:
            raise SettingsError("TASKGATE_TLS_CLIENT_CA needs TASKGATE_TLS_CERT and _KEY")
        return settings


def _hostile_caller_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The SecuritySettings fields that bound connections, callers and streams."""
    defaults = SecuritySettings
    return {
        "max_calls_per_caller": int(number(env, "TASKGATE_MAX_CALLS_PER_CALLER", 0, zero_ok=True)),
        "max_connections": int(number(env, "TASKGATE_MAX_CONNECTIONS", 0, zero_ok=True)),
        "max_concurrent_reads": whole(
            env, "TASKGATE_MAX_CONCURRENT_READS", defaults.max_concurrent_reads
        ),
        **{
            field_name: number(env, variable, getattr(defaults, field_name), zero_ok=zero_ok)
            for field_name, variable, zero_ok in (
                ("handshake_timeout_seconds", "TASKGATE_HANDSHAKE_TIMEOUT", False),
                ("connection_idle_seconds", "TASKGATE_CONNECTION_IDLE", False),
                ("connection_max_age_seconds", "TASKGATE_CONNECTION_MAX_AGE", False),
                ("connection_age_grace_seconds", "TASKGATE_CONNECTION_AGE_GRACE", True),
                ("keepalive_seconds", "TASKGATE_KEEPALIVE", False),
                ("min_client_ping_seconds", "TASKGATE_MIN_CLIENT_PING", False),
                ("stream_write_timeout_seconds", "TASKGATE_STREAM_WRITE_TIMEOUT", False),
            )
        },
    }
