"""CPU time, memory and threads of each process of the stack, read from /proc.

On a small machine every process competes for the same cores, so the CPU
time a front end spends per task bounds its throughput as much as any wait.
Linux only: elsewhere every reading is zero and the report says n/a.
A process and its descendants are summed, so a gateway that forks is read whole.
"""

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PPID, _UTIME, _STIME = 1, 11, 12  # indexes after the command name in /proc/<pid>/stat


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_seconds(pid: int) -> float:
    """User plus system CPU seconds of `pid`, all its threads included; 0 when unreadable."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[_UTIME]) + int(fields[_STIME])) / _TICKS


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[_PPID]) == pid:
                found.append(int(entry.name))
    return found


def tree_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (a prefork worker and its pool)."""
    return process_seconds(pid) + sum(tree_seconds(child) for child in _children(pid))


def _status_field(pid: int, name: str) -> int:
    """A number from /proc/<pid>/status (`VmRSS` in kB, `Threads`); 0 when unreadable."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    found = next((line for line in lines if line.startswith(f"{name}:")), None)
    return 0 if found is None else int(found.split()[1])


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    return [pid, *(member for child in _children(pid) for member in process_tree(child))]


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its live descendants, in bytes."""
    return sum(_status_field(member, "VmRSS") for member in process_tree(pid)) * 1024


def tree_threads(pid: int) -> int:
    """Threads of `pid` and its live descendants."""
    return sum(_status_field(member, "Threads") for member in process_tree(pid))
