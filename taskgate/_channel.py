"""Where and how the clients connect: address, TLS, the bearer token."""

import os
from dataclasses import dataclass

import grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"

# gRPC waits up to 120 s between reconnection attempts after repeated failures; a
# client retrying a restarted gateway for seconds would then keep failing fast long
# after the gateway is back.
CHANNEL_OPTIONS = (("grpc.max_reconnect_backoff_ms", 2000),)


def default_address() -> str:
    """TASKGATE_ADDRESS, else the gateway's default listening address."""
    return os.environ.get("TASKGATE_ADDRESS") or DEFAULT_ADDRESS


@dataclass(frozen=True)
class Connection:
    """A client's connection settings, resolved once when the client is made."""

    address: str
    credentials: grpc.ChannelCredentials | None
    """None means plaintext."""
    metadata: tuple[tuple[str, str], ...]
    """Sent with every call: the bearer token, when there is one."""


def connection(
    address: str | None,
    *,
    token: str | None,
    tls: bool,
    root_certificates: bytes | None,
    private_key: bytes | None,
    certificate_chain: bytes | None,
    credentials: grpc.ChannelCredentials | None,
) -> Connection:
    """The settings for these arguments: TLS when asked for or when any TLS material is
    given (no `root_certificates` means the system's trusted CAs); `credentials` wins."""
    if credentials is None and (tls or root_certificates or private_key or certificate_chain):
        credentials = grpc.ssl_channel_credentials(
            root_certificates, private_key, certificate_chain
        )
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return Connection(address or default_address(), credentials, metadata)


def open_channel(settings: Connection) -> grpc.Channel:
    """A synchronous channel."""
    if settings.credentials is None:
        return grpc.insecure_channel(settings.address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(settings.address, settings.credentials, options=CHANNEL_OPTIONS)


def open_aio_channel(settings: Connection) -> grpc.aio.Channel:
    """A `grpc.aio` channel."""
    if settings.credentials is None:
        return grpc.aio.insecure_channel(settings.address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(settings.address, settings.credentials, options=CHANNEL_OPTIONS)
