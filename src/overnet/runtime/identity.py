"""Which process is which: start times against PID reuse, pidfds, and whether a PID claimed to
be a container's really runs inside that container."""

from __future__ import annotations

import errno
import os


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) is in parentheses and may contain spaces or ')': split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()  # fields 3, 4, ...


def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[22 - 3])


def alive(pid: int, start_time: int) -> bool:
    """True if `pid` is running and is the process that started at `start_time` (not a
    recycled PID). A zombie counts as dead."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[22 - 3]) == start_time


def open_pidfd(pid: int, start_time: int | None = None) -> int:
    """A pidfd (readable once the process exits) for waiting on a process that is not our
    child. With `start_time`, raise ProcessLookupError if `pid` is now another process."""
    fd = os.pidfd_open(pid)
    # Checked after opening: the pidfd pins this exact process, so a match proves identity.
    if start_time is not None and proc_start_time(pid) != start_time:
        os.close(fd)
        raise ProcessLookupError(errno.ESRCH, f"process {pid} is not the expected one")
    return fd


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def pid_in_container(pid: int, netns_path: str | None) -> str | None:
    """None if process `pid` runs inside the container whose network namespace is pinned at
    `netns_path`, else why not.

    A client that reports "my container's process is PID N" must not be able to make the
    agent adopt (and later signal, or enter) an unrelated host process: the process has to be
    in the container's network namespace (unless the container has none: host networking),
    and in a mount namespace of its own (every container has one; the agent's and the host's
    processes do not)."""
    try:
        net = _ns_id(f"/proc/{pid}/ns/net")
        mnt = _ns_id(f"/proc/{pid}/ns/mnt")
    except FileNotFoundError:
        return f"process {pid} does not exist"
    except PermissionError:
        return f"process {pid}: cannot read its namespaces"
    try:
        want = _ns_id(netns_path) if netns_path else net
    except FileNotFoundError:
        return f"network namespace {netns_path} does not exist"
    if net != want:
        return f"process {pid} is not in the container's network namespace {netns_path}"
    if mnt == _ns_id("/proc/self/ns/mnt"):
        return f"process {pid} shares the agent's mount namespace: it is not a container's"
    return None


def pids_in_netns(netns_path: str) -> list[int]:
    """Every process whose network namespace is the one pinned at `netns_path`."""
    try:
        target = _ns_id(netns_path)
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and _ns_id(f"/proc/{entry}/ns/net") == target:
                out.append(int(entry))
        except OSError:
            continue     # gone meanwhile, or not ours to read
    return out
