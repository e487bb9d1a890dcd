"""Reading ``/proc``: processes, their ids and parents, their memory, and listening sockets.

Every reader tolerates a process that exits while it looks (that process is skipped).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "Memory",
    "descendants",
    "ids_of",
    "memfd_bytes",
    "memory",
    "owner_record",
    "parent_of",
    "pids",
    "runs",
    "started_at",
    "tcp_listeners",
]


def pids() -> Iterator[int]:
    """Every process's pid."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def started_at(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (``/proc/<pid>/stat`` field 22):
    with its pid, what tells it from a later process that got the same pid. None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_record(pid: int | None = None) -> dict[str, int | None]:
    """What names a process for good (this one by default): its pid and its start time, to
    write beside what it owns (a run folder, a claim) so that others can tell whether the
    owner still runs (:func:`runs`)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "started_at": started_at(pid)}


def runs(record: object) -> bool:
    """Whether the process an :func:`owner_record` names still runs: its pid is taken by a
    process that started when it did. A record that is not one names no process (False)."""
    if not isinstance(record, dict):
        return False
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    return owner_record(pid) == record


def ids_of(pid: int) -> set[int] | None:
    """A process's uids and gids (real, effective, saved, filesystem); None if it is gone."""
    ids: set[int] = set()
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("Uid:", "Gid:")):
                    ids.update(int(field) for field in line.split()[1:])
    except (OSError, ValueError):
        return None
    return ids


def parent_of(pid: int) -> int | None:
    """A process's parent pid; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name (field 2) may hold spaces and parentheses: split after it.
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        parent = parent_of(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class Memory:
    """A process's memory in bytes: its RSS, its PSS (shared pages split between the
    processes that map them), and its own: the PSS without shared memory (memfds)."""

    rss: int = 0
    pss: int = 0
    own: int = 0


def memory(pid: int) -> Memory:
    """From ``/proc/<pid>/smaps_rollup``; zeros if the process is gone."""
    fields = {"Rss:": 0, "Pss:": 0, "Pss_Shmem:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                name = line.split(maxsplit=1)[0] if line.strip() else ""
                if name in fields:
                    fields[name] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return Memory(fields["Rss:"], fields["Pss:"], fields["Pss:"] - fields["Pss_Shmem:"])


def memfd_bytes(processes: Iterable[int]) -> int:
    """The memory of every memfd the processes hold open, each counted once however many of
    them hold it (Python's mmap keeps a descriptor of what it maps, so a mapped memfd is held
    open too). Exact, unlike the machine-wide ``Shmem``, which every other process moves."""
    seen: dict[tuple[int, int], int] = {}
    for pid in processes:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(path).startswith("/memfd:"):
                    continue
                info = os.stat(path)
            except OSError:
                continue
            seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(seen.values())


def available_memory() -> int | None:
    """The kernel's estimate of memory available for new work (``MemAvailable``), bytes;
    None where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tcp_listeners(port: int) -> list[int]:
    """The uids owning the sockets that listen on TCP ``port``, at any address, IPv4 or IPv6,
    in this network namespace (from ``/proc/net/tcp*``, which every process may read)."""
    uids: list[int] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                lines = rows.read().splitlines()[1:]
        except OSError:
            continue  # no IPv6 here
        for line in lines:
            fields = line.split()  # sl local rem st queues tr retrnsmt uid timeout inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                uids.append(int(fields[7]))
    return uids
