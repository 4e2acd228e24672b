"""A description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class MachineInfo:
    """Where the figures come from.

    Attributes:
        nproc: CPUs this process may run on.
        cpu_model: "model name" from /proc/cpuinfo.
        mem_total_mib: MemTotal from /proc/meminfo.
        python: Interpreter version.
        platform: OS and kernel.
        date: When the run started (UTC, ISO 8601).
    """

    nproc: int
    cpu_model: str
    mem_total_mib: int | None
    python: str
    platform: str
    date: str


def _proc_field(path: str, key: str) -> str | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def machine_info(now: datetime | None = None) -> MachineInfo:
    """Describe this machine."""
    mem = _proc_field("/proc/meminfo", "MemTotal")
    return MachineInfo(
        nproc=len(os.sched_getaffinity(0)),
        cpu_model=_proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        mem_total_mib=int(mem.split()[0]) // 1024 if mem else None,
        python=platform.python_version(),
        platform=platform.platform(),
        date=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
    )
