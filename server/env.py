"""Reading one environment variable of the gateway's: a number, a whole number, an
address, a file, a list or a switch; a value it cannot use is a SettingsError naming it."""

import math
from collections.abc import Mapping
from pathlib import Path


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


def number(env: Mapping[str, str], name: str, default: float, *, zero_ok: bool = False) -> float:
    """A plain number (durations: seconds, as in `2.5`); never nan, inf or negative."""
    raw = env.get(name)
    if not raw:
        return default
    expected = "a number at least 0" if zero_ok else "a positive number"
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; expected {expected}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise SettingsError(f"{name}={raw!r}; expected {expected}")
    return value


def address(env: Mapping[str, str], name: str, default: str) -> str:
    """`host:port` (IPv6 hosts in brackets); gRPC would read a bare host as port 443."""
    raw = env.get(name) or default
    host, colon, port = raw.rpartition(":")
    if not colon or not host or host.endswith(":") or not port.isdigit() or int(port) > 65535:
        raise SettingsError(
            f"{name}={raw!r}; expected host:port, as in 127.0.0.1:50051 or [::]:50051 "
            "(port 0 picks a free one)"
        )
    return raw


def patterns(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """Comma-separated parts, blanks dropped."""
    raw = env.get(name) or default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def whole(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number, as `number` reads it."""
    value = number(env, name, default)
    if value != int(value):
        raise SettingsError(f"{name}={env.get(name)!r}; expected a whole number")
    return int(value)


def file_path(env: Mapping[str, str], name: str) -> Path | None:
    """The path of a file that exists; None when unset."""
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise SettingsError(f"{name}={raw!r} is not a file; expected the path of a readable file")
    return path


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(env: Mapping[str, str]) -> str:
    """`TASKGATE_LOG_LEVEL` (any case), INFO when unset; read before logging is set up."""
    raw = env.get("TASKGATE_LOG_LEVEL") or "INFO"
    if raw.upper() not in LOG_LEVELS:
        raise SettingsError(f"TASKGATE_LOG_LEVEL={raw!r}; expected one of {', '.join(LOG_LEVELS)}")
    return raw.upper()


_SWITCH = {"on": True, "off": False}


def switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    """`on` or `off`, any case; `default` when unset."""
    raw = env.get(name)
    if not raw:
        return default
    if raw.strip().lower() not in _SWITCH:
        raise SettingsError(f"{name}={raw!r} must be on or off")
    return _SWITCH[raw.strip().lower()]
