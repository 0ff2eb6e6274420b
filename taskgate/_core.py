"""What `Client` and `AsyncClient` share: settings, deadlines, retry choices, submissions."""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

import grpc

from taskgate._channel import Connection, connection
from taskgate._models import Submission
from taskgate._retry import NO_RETRIES, Attempts, Deadline, RetryPolicy

DEFAULT_TIMEOUT = 30.0


class CallOptions(TypedDict, total=False):
    """Celery calling options a submission may carry; see `Submission`."""

    queue: str
    countdown: float | timedelta
    eta: datetime
    expires: datetime | float | timedelta
    priority: int
    headers: Mapping[str, str]
    idempotency_key: str


def submission(
    task: str, args: Sequence[Any], kwargs: Mapping[str, Any] | None, options: CallOptions
) -> Submission:
    """The Submission for a `submit` or `execute` call."""
    return Submission(task, tuple(args), dict(kwargs or {}), **options)


class ClientSettings(TypedDict, total=False):
    """How a client connects, and its defaults for every call; see `ClientBase`."""

    token: str | None
    tls: bool
    root_certificates: bytes | None
    private_key: bytes | None
    certificate_chain: bytes | None
    credentials: grpc.ChannelCredentials | None
    timeout: float | None
    retry: RetryPolicy | None


class ClientBase:
    """Connection settings, the default deadline and the retry policy of a client.

    `address` defaults to TASKGATE_ADDRESS, else 127.0.0.1:50051. `token` is sent as
    a bearer token. TLS is used when `tls` is set or any of `root_certificates`,
    `private_key`, `certificate_chain` (PEM bytes; the last two for mutual TLS) is
    given, or with ready-made `credentials`. `timeout` (seconds, None for none; 30 by
    default) bounds each call that names none, on top of the time a call is asked to
    wait. `retry` says how calls that are safe to repeat are retried on UNAVAILABLE.
    """

    def __init__(self, address: str | None = None, **settings: Unpack[ClientSettings]) -> None:
        self._connection: Connection = connection(
            address,
            token=settings.get("token"),
            tls=settings.get("tls", False),
            root_certificates=settings.get("root_certificates"),
            private_key=settings.get("private_key"),
            certificate_chain=settings.get("certificate_chain"),
            credentials=settings.get("credentials"),
        )
        self._timeout = settings.get("timeout", DEFAULT_TIMEOUT)
        self._retry = settings.get("retry") or RetryPolicy()

    @property
    def address(self) -> str:
        """Where the gateway is expected to listen."""
        return self._connection.address

    def _attempts(self, timeout: float | None, *, wait: float = 0.0, safe: bool = True) -> Attempts:
        """The tries of one call: its deadline (`timeout`, else the client's plus `wait`)
        and, for a call `safe` to repeat, the retry policy."""
        if timeout is None and self._timeout is not None:
            timeout = self._timeout + wait
        return Attempts(self._retry if safe else NO_RETRIES, Deadline(timeout))

    def _watch_attempts(self, timeout: float | None) -> Attempts:
        """A watch runs as long as its task: no deadline unless one is given."""
        return Attempts(self._retry, Deadline(timeout))
