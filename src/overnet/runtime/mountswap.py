"""Replacing a bind-mounted file (a container's /etc/hosts) inside running containers.

Writing a bind-mounted file in place is not atomic, and a rename on the host does not reach
the mount. Stacking the new file on top and then unmounting the old one underneath (through
an O_PATH fd) does not work either: umount resolves to the topmost mount and removes the new
file. What works is the reverse, MOVE_MOUNT_BENEATH (Linux 6.5): put the new file under the
current mount, then unmount the top one.

Entering a mount namespace needs a single-threaded process, so the swap runs in a forked
child. The fork (copying the agent's page tables) costs far more than the mount calls, so
a batch of swaps, e.g. /etc/hosts of every container after a cluster change, shares one fork.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from ..dataplane import syscalls as sc

# Two swaps of one file racing could each unmount the other's new file: one at a time.
_replace_lock = threading.Lock()
# Swaps per fork, bounded so that the child's replies (one short line each) fit in the pipe
# buffer and the child never blocks on writing while we wait for it; and so is our fd count.
_BATCH = 128
_MAX_REPLY = 400  # bytes


@dataclass
class _Swap:
    index: int
    pid: int
    target: str
    new_path: str
    ns_fd: int = -1
    tree_fd: int = -1


def _swap_mount(swap: _Swap) -> None:
    """In the forked child: swap the mount on swap.target in the container's namespace."""
    sc.setns(swap.ns_fd, sc.CLONE_NEWNS)
    attach = sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_SYMLINKS
    try:
        # Slide the new file under the current mount, then drop the one on top: a path lookup
        # finds the old file or the new one, never a missing or partial file.
        sc.move_mount(swap.tree_fd, swap.target, attach | sc.MOVE_MOUNT_BENEATH)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        # Nothing mounted on target (the host replaced the file by rename, which detaches the
        # mounts on it: heal), or a kernel older than 6.5 without MOVE_MOUNT_BENEATH (swap
        # non-atomically: readers may briefly see the host's file, never half a file).
        # (Not sc.is_mountpoint: /proc here is the container's, where we have no /proc/self.)
        try:
            sc.umount2(swap.target, sc.MNT_DETACH)
        except OSError as e2:
            if e2.errno != errno.EINVAL:   # EINVAL: not a mount point
                raise
        sc.move_mount(swap.tree_fd, swap.target, attach)
    else:
        sc.umount2(swap.target, sc.MNT_DETACH)


def _swap_child(swaps: list[_Swap], out_fd: int) -> NoReturn:
    try:
        for swap in swaps:
            try:
                _swap_mount(swap)
                reply = b"ok"
            except Exception as e:  # noqa: BLE001 - reported to the parent
                reply = str(e).replace("\n", " ").encode(errors="replace")[:_MAX_REPLY]
            os.write(out_fd, b"%d\t%s\n" % (swap.index, reply))
    finally:
        os._exit(0)  # never return into the parent's stack


def _swap_batch(swaps: list[_Swap], errors: list[OSError | None]) -> None:
    fds: list[int] = []
    ready: list[_Swap] = []
    try:
        for swap in swaps:
            try:
                swap.ns_fd = os.open(f"/proc/{swap.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                errors[swap.index] = ProcessLookupError(
                    errno.ESRCH, f"container process {swap.pid} does not exist")
                continue
            fds.append(swap.ns_fd)
            try:
                # Clone the new file as a detached mount here, in the host's mount namespace
                # where new_path is visible for sure; the child only attaches it.
                swap.tree_fd = sc.open_tree(swap.new_path)
            except OSError as e:
                errors[swap.index] = e
                continue
            fds.append(swap.tree_fd)
            ready.append(swap)
        if not ready:
            return
        rfd, wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        fds += [rfd, wfd]
        child = os.fork()
        if child == 0:
            _swap_child(ready, wfd)
        os.waitpid(child, 0)
        replies = {}
        for line in _read_available(rfd).splitlines():
            index, _, reply = line.partition("\t")
            replies[int(index)] = reply
        for swap in ready:
            reply = replies.get(swap.index, "the child process died")
            if reply != "ok":
                errors[swap.index] = OSError(
                    f"cannot replace {swap.target} in container process {swap.pid} "
                    f"with {swap.new_path}: {reply}")
    finally:
        for fd in fds:
            os.close(fd)


def _read_available(fd: int) -> str:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def replace_files(swaps: Sequence[tuple[int, str, str]]) -> list[OSError | None]:
    """Atomically make each `target` (a bind-mounted file such as /etc/hosts) inside the
    container whose process is `pid` show `new_path` instead, for each (pid, target, new_path).

    Returns one error (ProcessLookupError if the process is gone) or None per swap. The old
    source files are no longer used afterwards: callers can keep a stable name by writing
    `hosts.new`, swapping it in, then renaming `hosts.new` over `hosts`.
    """
    errors: list[OSError | None] = [None] * len(swaps)
    todo = [_Swap(i, pid, target, new_path) for i, (pid, target, new_path) in enumerate(swaps)]
    with _replace_lock:
        for start in range(0, len(todo), _BATCH):
            _swap_batch(todo[start:start + _BATCH], errors)
    return errors


def replace_hosts_many(new_paths: Mapping[int, str]) -> dict[int, OSError]:
    """replace_hosts for many containers ({pid: new_path}) in one fork; returns the failures."""
    pids = list(new_paths)
    errors = replace_files([(pid, "/etc/hosts", new_paths[pid]) for pid in pids])
    return {pid: err for pid, err in zip(pids, errors) if err is not None}


def replace_hosts(pid: int, new_path: str) -> None:
    """Atomically switch the container's /etc/hosts to `new_path` (see replace_files)."""
    err = replace_files([(pid, "/etc/hosts", new_path)])[0]
    if err is not None:
        raise err
