"""Hosts for the multi-host tests: Linux network namespaces joined by veth pairs.

Each host is a network namespace with its own interfaces, addresses and routes;
processes started on a host run inside it (`ip netns exec`). Hosts join one or
more networks; a network is a bridge inside a "switch" namespace, so cutting a
host off is `ip link set ... down` on its side of the pair. The test process
itself, in the machine's own namespace, is the client host: it joins the
networks it names with a veth pair of its own. Nothing leaves the machine.

Names carry the creating process's pid, so a run that was killed before it
could clean up is swept by the next one, and two runs never share a name.
"""

import contextlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

PREFIX = "tg"
_OURS = re.compile(rf"^{PREFIX}(\d+)-")


class NamespacesUnavailable(RuntimeError):
    """This machine will not let the test make network namespaces; the message says why."""


def ip(*args: str, netns: str | None = None) -> None:
    """Run one `ip` command (in `netns`, if given); raise with its error output."""
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def _delete_namespace(name: str) -> None:
    """Kill what still runs in `name`, then delete it (its veth ends go with it)."""
    listed = ["ip", "netns", "pids", name]
    pids = subprocess.run(listed, capture_output=True, text=True, check=False)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def sweep_stale() -> None:
    """Delete the namespaces of earlier runs whose process is gone."""
    for name in _namespaces():
        match = _OURS.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete_namespace(name)


def check_available() -> None:
    """Raise NamespacesUnavailable unless this process can make and use a namespace."""
    if shutil.which("ip") is None:
        raise NamespacesUnavailable("the `ip` command (iproute2) is not installed")
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
        ip("link", "set", "lo", "up", netns=probe)
    except RuntimeError as exc:
        raise NamespacesUnavailable(f"the kernel refused a network namespace: {exc}") from exc
    finally:
        _delete_namespace(probe)


@dataclass
class Host:
    """One host: a namespace, and its address on each network it joined."""

    name: str
    netns: str | None
    addresses: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run on this host."""
        if self.netns is None:
            return argv
        return ["ip", "netns", "exec", self.netns, *argv]

    def set_link(self, network: str, up: bool) -> None:
        """Plug this host's cable into `network`, or pull it out."""
        ip("link", "set", self.links[network], "up" if up else "down", netns=self.netns)


class Lab:
    """Networks and hosts made for one test run; `close()` removes every trace."""

    def __init__(self, networks: dict[str, str]) -> None:
        """`networks` maps a network's name to its /24 prefix, e.g. {"front": "10.231.7"}."""
        self._tag = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self._switch = f"{self._tag}-switch"
        self._networks = networks
        self._namespaces: list[str] = []
        self._pairs = 0
        self.hosts: dict[str, Host] = {}

    def build(self) -> None:
        """Make the switch and one bridge per network."""
        self._add_namespace(self._switch)
        for network in self._networks:
            ip("link", "add", f"br-{network}", "type", "bridge", netns=self._switch)
            ip("link", "set", f"br-{network}", "up", netns=self._switch)

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("link", "set", "lo", "up", netns=name)

    def add_host(self, name: str, joins: dict[str, int], *, own_stack: bool = True) -> Host:
        """A host with address `<prefix>.<n>` on each network in `joins`.

        With `own_stack=False` the host is this test process's own namespace.
        """
        netns = f"{self._tag}-{name}" if own_stack else None
        if netns:
            self._add_namespace(netns)
        host = Host(name, netns)
        for network, number in joins.items():
            self._pairs += 1
            inside = f"{PREFIX}{os.getpid() % 10000}x{self._pairs}{uuid.uuid4().hex[:3]}"
            outside = f"sw{self._pairs}"
            peer = ("peer", "name", outside, "netns", self._switch)
            ip("link", "add", inside, "type", "veth", *peer)
            if netns:
                ip("link", "set", inside, "netns", netns)
            address = f"{self._networks[network]}.{number}"
            ip("addr", "add", f"{address}/24", "dev", inside, netns=netns)
            ip("link", "set", inside, "up", netns=netns)
            ip("link", "set", outside, "master", f"br-{network}", netns=self._switch)
            ip("link", "set", outside, "up", netns=self._switch)
            host.addresses[network] = address
            host.links[network] = inside
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Kill every process on the lab's hosts and delete their namespaces.

        Deleting the switch also deletes the far end of the client host's veth
        pairs, and with it the near end in this process's namespace.
        """
        for name in reversed(self._namespaces):
            _delete_namespace(name)


@contextlib.contextmanager
def lab(networks: dict[str, str]) -> Iterator[Lab]:
    """A Lab that is cleaned up whatever happens."""
    sweep_stale()
    made = Lab(networks)
    try:
        made.build()
        yield made
    finally:
        made.close()
