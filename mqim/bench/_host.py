"""The loopback machine the harness starts targets on: a free port, a process tree's memory and CPU."""

from __future__ import annotations

import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on `host` right now (bind to port 0, read, release)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces; the parent pid follows the last ')'.
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree_cpu_s(pid: int) -> float | None:
    """CPU time (user + system) `pid` and its descendants used so far, in seconds; None if gone."""
    children = _children()
    ticks = os.sysconf("SC_CLK_TCK")
    total, found, todo = 0, False, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        found = True
        todo.extend(children.get(current, ()))
    return total / ticks if found else None


def process_tree_rss(pid: int) -> int | None:
    """Resident memory (VmRSS) of `pid` and all its descendants in bytes; None if `pid` is gone."""
    children = _children()
    total, found, todo = 0, False, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                found = True
        todo.extend(children.get(current, ()))
    return total if found else None
