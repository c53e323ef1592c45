"""CPU time from /proc (Linux): of one process, of every process with a given name, of the machine.

CPU time is the steadier figure on a shared machine: other load changes wall-clock rates far
more than the CPU a process spends per request.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat (Linux).

    Fields 14 and 15 of that line, in clock ticks; the command name (field 2) may hold spaces and
    parentheses, so the fields are counted from the last ")" (after it comes field 3).
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / CLK_TCK


def cpu_of(pid: int | None) -> float | None:
    """`process_cpu_seconds`, or None without a pid, once the process is gone, or off Linux."""
    if not pid:
        return None
    try:
        return process_cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return None


def cpu_of_all(pids: list[int]) -> float | None:
    """The CPU seconds of several processes (uvicorn's workers of one instance) together; None if
    any of them cannot be read."""
    times = [cpu_of(pid) for pid in pids]
    if not times or any(t is None for t in times):
        return None
    return sum(t for t in times if t is not None)


def process_stats() -> Iterator[tuple[int, str]]:
    """(pid, /proc/<pid>/stat line) of every process (Linux; none elsewhere), skipping those that
    exit while they are read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), stat


def cpu_by_name(name: str) -> float:
    """utime + stime of every process whose command is `name`, plus the time of children they
    reaped (cutime + cstime: Postgres backends that exited)."""
    total = 0
    for _, stat in process_stats():
        if stat[stat.find("(") + 1 : stat.rfind(")")] != name:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # fields 14-17 of the line
    return total / CLK_TCK


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) clock ticks of every CPU since boot, from /proc/stat.

    Steal (a virtual machine's CPU taken by the host) counts as busy: the machine could not use it.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    values += [0] * (8 - len(values))
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total, values[7]
