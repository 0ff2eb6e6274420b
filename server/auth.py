"""Bearer-token authentication and per-token rights.

Tokens are configured as SHA-256 digests, never in plain text, in a JSON file
(`TASKGATE_TOKENS_FILE`)::

    {"tokens": [{"name": "billing", "sha256": "<hex>", "tasks": ["billing.*"], "cancel": false}]}

`python -m server.auth NAME [PATTERN ...]` makes a new random token and prints it
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

from server.errors import PermissionDenied, Unauthenticated


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


class TokenAuthenticator:
    """Maps `authorization: Bearer <token>` metadata to a Principal."""

    def __init__(self, entries: Sequence[TokenEntry]) -> None:
        self._entries = tuple(entries)

    @property
    def enabled(self) -> bool:
        """False when no tokens are configured: every caller is ANONYMOUS."""
        return bool(self._entries)

    @classmethod
    def from_file(cls, path: Path | None) -> "TokenAuthenticator":
        """Load the tokens file; no path means authentication is off."""
        if path is None:
            return cls(())
        document = json.loads(path.read_text())
        return cls([_entry(raw) for raw in document["tokens"]])

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


def _entry(raw: dict[str, Any]) -> TokenEntry:
    principal = Principal(
        name=str(raw["name"]),
        task_patterns=tuple(raw.get("tasks", ())),
        may_cancel=bool(raw.get("cancel", False)),
    )
    return TokenEntry(bytes.fromhex(raw["sha256"]), principal)


def main(argv: Sequence[str]) -> None:
    """Print a new token and the tokens-file entry that grants it `argv[1:]` patterns."""
    if not argv:
        sys.exit("usage: python -m server.auth NAME [TASK_PATTERN ...]")
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
