"""The settings of a gateway that serves TLS only and requires a bearer token, for the
client and CLI tests; the certificate authority is a throwaway one."""

import json
from dataclasses import dataclass
from pathlib import Path

from taskgate.server.auth import digest
from tests.tls_helpers import Authority

TOKEN = "client-token-0123456789abcdef"


@dataclass(frozen=True)
class Secured:
    """A secured gateway's environment, and what a caller needs to reach it."""

    env: dict[str, str]
    ca: Path
    token: str = TOKEN

    def ca_pem(self) -> bytes:
        """The CA certificate the gateway's certificate is signed by."""
        return self.ca.read_bytes()


def secured(stack_env: dict[str, str], directory: Path) -> Secured:
    """`stack_env` with a certificate for 127.0.0.1 and one token that may do anything."""
    authority = Authority(directory, "client-tests")
    server = authority.issue("gateway", ips=("127.0.0.1",))
    tokens = directory / "tokens.json"
    entry = {"name": "caller", "sha256": digest(TOKEN).hex(), "tasks": ["*"], "cancel": True}
    tokens.write_text(json.dumps({"tokens": [entry]}))
    env = {
        **stack_env,
        "TASKGATE_TLS_CERT": str(server.cert),
        "TASKGATE_TLS_KEY": str(server.key),
        "TASKGATE_TOKENS_FILE": str(tokens),
    }
    return Secured(env, authority.cert)
