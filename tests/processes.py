"""The processes running now, read from /proc: what tests count to prove a worker, a spare, a Ray
process or a session's run was started, or is gone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    name: bytes  # /proc/PID/comm: what ps shows (a worker sets its own, digitrec-run or digitrec-spare)
    cmdline: bytes  # NUL-separated arguments


def running() -> dict[int, Process]:
    """Every process now; one that exits while it is read is left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            process = _read(int(entry.name))
            if process is not None:
                found[process.pid] = process
    return found


def children(pid: int) -> list[Process]:
    """The processes whose parent is ``pid``."""
    return [p for p in running().values() if p.parent == pid]


def descendants(pid: int) -> list[Process]:
    """Children of ``pid``, their children, and so on."""
    everyone = running()
    mine, found = {pid}, True
    while found:
        found = False
        for p in everyone.values():
            if p.parent in mine and p.pid not in mine:
                mine.add(p.pid)
                found = True
    return [everyone[p] for p in mine - {pid}]


def cmdline(pid: int) -> bytes:
    """The command line of ``pid``; empty once it has exited."""
    process = _read(pid)
    return process.cmdline if process is not None else b""


def _read(pid: int) -> Process | None:
    folder = Path(f"/proc/{pid}")
    try:
        # Bytes throughout: a process may name itself in anything but UTF-8. The name in stat sits
        # in parentheses and may hold spaces or ")": the parent's pid is read after the last one.
        parent = int((folder / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
        return Process(pid, parent, (folder / "comm").read_bytes().strip(), (folder / "cmdline").read_bytes())
    except (OSError, IndexError, ValueError):  # it exited while being read
        return None
