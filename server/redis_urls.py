"""Redis URLs as Celery and kombu read them, and the gateway's clients for them.

A URL names one Redis (`redis://`, `rediss://`) or a Sentinel set that names the
primary (`sentinel://host:26379;sentinel://host2:26379/0`, the master's name in
the transport options: `broker_transport_options` for the broker,
`result_backend_transport_options` for the result backend). Both sides read the
first URL's password and database, as kombu and Celery's SentinelBackend do; the
sentinels' own password goes in the options' `sentinel_kwargs`.
"""

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from taskgate.worker.factory import ConfigurationError, sanitized_url

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379
REDIS_PORT = 6379
_SEPARATOR = ";"


def is_sentinel(url: str) -> bool:
    """True for a `sentinel://` URL (or a `;`-separated list of them)."""
    return url.partition("://")[0] == SENTINEL_SCHEME


@dataclass(frozen=True)
class SentinelSet:
    """The sentinels to ask, and what to open on the primary they name."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict)
    min_other_sentinels: int = 0


def _database(path: str, url: str, setting: str) -> int:
    db = path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigurationError(
            f"{setting}={sanitized_url(url)!r} has database {db!r}; expected a number"
        )
    return int(db)


def _sentinel_address(chunk: str, url: str, setting: str) -> tuple[str, int]:
    parts = urlsplit(chunk)
    try:
        port = parts.port or SENTINEL_PORT
    except ValueError:
        port = -1
    if parts.scheme != SENTINEL_SCHEME or not parts.hostname or port < 0:
        raise ConfigurationError(
            f"{setting}={sanitized_url(url)!r}: {sanitized_url(chunk)!r} is not a sentinel "
            "address; expected sentinel://host:26379;sentinel://host2:26379/0, every part "
            "sentinel://host[:port]"
        )
    return parts.hostname, port


def parse_sentinel_url(
    url: str, options: Mapping[str, Any], setting: str, options_name: str = "transport options"
) -> SentinelSet:
    """Read a `sentinel://` URL with its transport options (the setting `options_name`);
    ConfigurationError, one line naming `setting`, for a malformed address or a
    missing `master_name`."""
    chunks = [chunk for chunk in url.split(_SEPARATOR) if chunk.strip()]
    sentinels = tuple(_sentinel_address(chunk.strip(), url, setting) for chunk in chunks)
    master_name = options.get("master_name")
    if not sentinels or not isinstance(master_name, str) or not master_name:
        raise ConfigurationError(
            f"{setting}={sanitized_url(url)!r}: a sentinel:// URL needs the primary's name "
            f"as 'master_name' in {options_name}"
        )
    first = urlsplit(chunks[0].strip())
    return SentinelSet(
        sentinels=sentinels,
        master_name=master_name,
        db=_database(first.path, chunks[0], setting),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        sentinel_kwargs=dict(options.get("sentinel_kwargs") or {}),
        min_other_sentinels=int(options.get("min_other_sentinels") or 0),
    )


def place(url: str, options: Mapping[str, Any]) -> Hashable:
    """What identifies the database `url` names: host, port and db, or for a Sentinel
    set its sentinels, master name and db. Equal places are one database."""
    if is_sentinel(url):
        found = parse_sentinel_url(url, options, "url")
        return (frozenset(found.sentinels), found.master_name, found.db)
    parts = urlsplit(url)
    db = _database(parts.path, url, "url")
    return (parts.hostname or "localhost", parts.port or REDIS_PORT, db)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A pool on the primary Sentinel names that makes callers wait for a connection."""


def connect(
    url: str, options: Mapping[str, Any], *, max_connections: int, retry: Retry, **socket: float
) -> Redis:
    """An asyncio client for `url` with a bounded, blocking pool; `socket` holds
    socket_timeout and socket_connect_timeout, for the sentinels too unless
    `sentinel_kwargs` says otherwise."""
    common: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": socket["socket_timeout"],
        "health_check_interval": 30,
        "retry": retry,
        **socket,
    }
    if not is_sentinel(url):
        return Redis(connection_pool=BlockingConnectionPool.from_url(url, **common))
    found = parse_sentinel_url(url, options, "url")
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(found.sentinels),
        min_other_sentinels=found.min_other_sentinels,
        sentinel_kwargs={**socket, **found.sentinel_kwargs},
    )
    client: Redis = sentinel.master_for(
        found.master_name,
        connection_pool_class=_BlockingSentinelPool,
        db=found.db,
        username=found.username,
        password=found.password,
        **common,
    )
    return client


def check_urls(conf: Any) -> None:
    """Raise ConfigurationError for a malformed sentinel:// broker or backend URL."""
    for url_name, variable, options_name in (
        ("broker_url", "CELERY_BROKER_URL", "broker_transport_options"),
        ("result_backend", "CELERY_RESULT_BACKEND", "result_backend_transport_options"),
    ):
        url = str(conf.get(url_name) or "")
        if is_sentinel(url):
            setting = f"{url_name} ({variable} or the configuration module)"
            parse_sentinel_url(url, conf.get(options_name) or {}, setting, options_name)
