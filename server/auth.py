"""Bearer-token authentication and per-token rights.

Tokens are configured as SHA-256 digests, never in plain text, in a JSON file
(`TASKGATE_TOKENS_FILE`)::

    {"tokens": [{"name": "billing", "sha256": "<hex>", "tasks": ["billing.*"], "cancel": false}]}

`python -m taskgate.server.auth NAME [PATTERN ...]` makes a new random token and prints it
with the entry to add. Tokens are high-entropy random strings, so a plain digest
is enough to keep them out of configuration; it is compared in constant time.
"""

import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from taskgate.server.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    name: str
    task_patterns: tuple[str, ...] = ("*",)
    may_cancel: bool = True

    def may_submit(self, task: str) -> bool:
        """True when one of this caller's patterns matches `task`."""
        return any(fnmatchcase(task, pattern) for pattern in self.task_patterns)

    def require_task(self, task: str) -> None:
        """Raise PermissionDenied unless this caller may submit `task`."""
        if not self.may_submit(task):
            raise PermissionDenied(f"{self.name!r} may not submit {task!r}")

    def require_cancel(self) -> None:
        """Raise PermissionDenied unless this caller may cancel tasks."""
        if not self.may_cancel:
            raise PermissionDenied(f"{self.name!r} may not cancel tasks")


ANONYMOUS = Principal("anonymous")
"""The caller when no tokens are configured: authentication is off."""

current_principal: ContextVar[Principal] = ContextVar("current_principal", default=ANONYMOUS)


@dataclass(frozen=True)
class TokenEntry:
    """One configured token: its digest and the rights it carries."""

    digest: bytes
    principal: Principal = field(compare=False)


def digest(token: str) -> bytes:
    """The SHA-256 digest a token is configured by."""
    return hashlib.sha256(token.encode()).digest()


class TokensFileError(ValueError):
    """The tokens file cannot be used; the message names the file and what is wrong."""


class TokenAuthenticator:
    """Maps `authorization: Bearer <token>` metadata to a Principal.

    Loaded from a file, the tokens can be loaded again (`reload`) while calls go on:
    the new set replaces the old in one assignment, and a bad file changes nothing.
    """

    def __init__(self, entries: Sequence[TokenEntry], path: Path | None = None) -> None:
        self._entries = tuple(entries)
        self._path = path

    @property
    def enabled(self) -> bool:
        """False when no tokens file is configured: every caller is ANONYMOUS."""
        return self._path is not None or bool(self._entries)

    @classmethod
    def from_file(cls, path: Path | None) -> "TokenAuthenticator":
        """Load the tokens file; no path means authentication is off.

        Raises TokensFileError for a file that is not a non-empty list of valid
        entries: an empty list never turns authentication off (fail closed).
        """
        if path is None:
            return cls(())
        return cls(read_tokens(path), path)

    def reload(self) -> int:
        """Read the tokens file again and use it; how many tokens are in force.

        Raises TokensFileError, keeping the tokens in force, when the file is bad.
        """
        if self._path is None:
            return 0
        self._entries = read_tokens(self._path)
        return len(self._entries)

    def authenticate(self, metadata: Iterable[tuple[str, Any]]) -> Principal:
        """The caller named by the metadata's bearer token; raises Unauthenticated."""
        if not self.enabled:
            return ANONYMOUS
        values = [value for key, value in metadata if key == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            raise Unauthenticated("send one 'authorization: Bearer <token>' metadata entry")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        presented = digest(token.strip())
        found: Principal | None = None
        for entry in self._entries:  # no early exit: the time taken says nothing
            if hmac.compare_digest(entry.digest, presented):
                found = entry.principal
        if found is None:
            raise Unauthenticated("the token is not valid")
        return found


def read_tokens(path: Path) -> tuple[TokenEntry, ...]:
    """The entries of the tokens file at `path`; TokensFileError names what is wrong."""
    where = f"TASKGATE_TOKENS_FILE={str(path)!r}"
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensFileError(f"{where} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TokensFileError(f"{where} is not JSON ({exc}); expected {_SHAPE}") from None
    raw_entries = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(raw_entries, list):
        raise TokensFileError(f"{where} has no 'tokens' list; expected {_SHAPE}")
    if not raw_entries:
        raise TokensFileError(
            f"{where} lists no tokens; expected at least one (an empty list never turns "
            "authentication off: unset TASKGATE_TOKENS_FILE for that)"
        )
    return tuple(_entry(raw, f"{where}, entry {n}") for n, raw in enumerate(raw_entries, 1))


_SHAPE = '{"tokens": [{"name": ..., "sha256": "<64 hex digits>", "tasks": [...]}]}'


def _entry(raw: Any, where: str) -> TokenEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise TokensFileError(f"{where} has no 'name'; expected an object like {_SHAPE}")
    sha256 = raw.get("sha256")
    try:
        token_digest = bytes.fromhex(sha256) if isinstance(sha256, str) else b""
    except ValueError:
        token_digest = b""
    if len(token_digest) != hashlib.sha256().digest_size:
        raise TokensFileError(
            f"{where} ({raw['name']!r}): sha256={sha256!r}; expected the token's SHA-256 "
            "digest as 64 hex digits (python -m taskgate.server.auth NAME makes one)"
        )
    tasks = raw.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise TokensFileError(f"{where} ({raw['name']!r}): tasks={tasks!r}; expected a list")
    principal = Principal(raw["name"], tuple(tasks), bool(raw.get("cancel", False)))
    return TokenEntry(token_digest, principal)


def main(argv: Sequence[str]) -> None:
    """Print a new token and the tokens-file entry that grants it `argv[1:]` patterns."""
    if not argv:
        sys.exit("usage: python -m taskgate.server.auth NAME [TASK_PATTERN ...]")
    token = secrets.token_urlsafe(32)
    entry = {
        "name": argv[0],
        "sha256": digest(token).hex(),
        "tasks": list(argv[1:]),
        "cancel": False,
    }
    print(f"token (give it to the caller, store it nowhere else): {token}")
    print(f"entry for TASKGATE_TOKENS_FILE: {json.dumps(entry)}")


if __name__ == "__main__":
    main(sys.argv[1:])
