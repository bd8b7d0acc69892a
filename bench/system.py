"""What the machine is, and what each process costs: CPU seconds and RSS read from /proc."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [0] is field 3 (state)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """utime + stime of a process (0 if it is gone); with the reaped children's times if asked."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def children(pid: int) -> list[int]:
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == pid:
            out.append(int(entry.name))
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and all its children, living or reaped (a PostgreSQL server: the
    postmaster reaps its backends, so their time moves into its cutime/cstime)."""
    return cpu_seconds(root, with_children=True) + sum(
        cpu_seconds(child, with_children=True) for child in children(root)
    )


def rss_mb(pid: int) -> float:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def _tcp_sockets() -> Iterator[tuple[int, str, str]]:
    """(local port, state, inode) of every TCP socket in /proc/net/tcp and tcp6."""
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            yield int(parts[1].rsplit(":", 1)[1], 16), parts[3], parts[9]


def pid_listening_on(port: int) -> int | None:
    """The process holding the TCP socket that listens on `port` (any local address)."""
    inodes = {
        f"socket:[{inode}]"
        for local_port, state, inode in _tcp_sockets()
        if state == "0A" and local_port == port
    }
    if not inodes:
        return None
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return None


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def busy_processes() -> list[str]:
    """Other heavy runs on this shared machine: pytest processes (not our own children)."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if re.search(r"(^|/|\s)(py\.?test|pytest)(\s|$)", cmdline) or "-m pytest" in cmdline:
            found.append(f"{entry.name} {cmdline[:120]}")
    return found


@dataclass(frozen=True)
class Machine:
    nproc: int
    memory_gib: float
    cpu_model: str
    kernel: str
    python: str

    @classmethod
    def read(cls) -> Machine:
        model = "unknown"
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = 0
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        return cls(
            nproc=os.cpu_count() or 0,
            memory_gib=round(mem_kb / 1024 / 1024, 1),
            cpu_model=model,
            kernel=platform.release(),
            python=platform.python_version(),
        )


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        pass
    return found


def tcp_connections(pid: int) -> int:
    """Established TCP connections held by a process (its socket fds found in /proc/net/tcp*
    in state 01); 0 if it is gone."""
    inodes = _socket_inodes(pid)
    if not inodes:
        return 0
    return sum(1 for _, state, inode in _tcp_sockets() if state == "01" and inode in inodes)


def open_fds(pid: int) -> int:
    try:
        return sum(1 for _ in (PROC / str(pid) / "fd").iterdir())
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return 0


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x (None with fewer than 3 points or no spread in x)."""
    n = len(points)
    if n < 3:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
