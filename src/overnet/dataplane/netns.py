"""Named network namespaces as bind-mounted files, without spawning processes.

A namespace lives as long as something references it; a bind mount of its nsfs file onto a
regular file (what `ip netns add` does under /run/netns) pins it independently of any process.
Everything here works on the calling *thread* (setns/unshare of CLONE_NEWNET are per-thread),
so the agent can step into a namespace, open a netlink socket there and step back.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from overnet.dataplane import syscalls

_SELF_NET = "/proc/thread-self/ns/net"
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_NS_GET_NSTYPE = 0xB703          # ioctl on a namespace file: its CLONE_NEW* type
_NSFS_DEV: int | None = None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _netns_mounts() -> set[str]:
    """Mount points in this mount namespace that pin a network namespace."""
    found: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, fstype = left.split(), right.split(" ", 1)[0]
            # nsfs bind mounts show the namespace as their root, e.g. "net:[4026532281]".
            if fstype == "nsfs" and fields[3].startswith("net:"):
                found.add(_unescape(fields[4]))
    return found


def is_netns(path: str) -> bool:
    """True if `path` is a network namespace's file: a bind mount pinning one (what `ip netns
    add` makes), or /proc/PID/ns/net. Asked of the file itself (nsfs, then its type), a few
    syscalls: reading the mount table instead costs more with every container."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != _nsfs_dev():
            return False   # e.g. the empty file left where a namespace was unmounted
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == syscalls.CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


def _nsfs_dev() -> int:
    """The device of nsfs, where every namespace file lives."""
    global _NSFS_DEV
    if _NSFS_DEV is None:
        _NSFS_DEV = os.stat(_SELF_NET).st_dev
    return _NSFS_DEV


def list_netns(directory: str) -> list[str]:
    """Names of the entries of `directory` that are pinned network namespaces (sorted)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    mounts = _netns_mounts()
    real = os.path.realpath(directory)
    return sorted(n for n in names if os.path.join(real, n) in mounts)


def create_netns(path: str) -> None:
    """Create a network namespace pinned at `path` (idempotent), with `lo` up.

    The namespace is made by a short-lived thread that unshares its own network namespace and
    bind-mounts it: the caller's thread never changes namespace and no process is spawned.
    """
    path = os.path.abspath(path)
    if is_netns(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # The mount target must exist; an existing unmounted file (a leftover) is reused.
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            syscalls.unshare(syscalls.CLONE_NEWNET)
            syscalls.mount(_SELF_NET, path, "none", syscalls.MS_BIND)
            _set_lo_up()
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)

    t = threading.Thread(target=worker, name="overnet-netns-create", daemon=True)
    t.start()
    t.join()
    if errors:
        if is_netns(path):
            delete_netns(path)
        else:
            _unlink_quiet(path)
        code = getattr(errors[0], "errno", None) or errno.EIO
        raise OSError(code, f"cannot create network namespace {path}: {errors[0]}") from errors[0]


def _set_lo_up() -> None:
    """`lo` up in the calling thread's namespace: two ioctls on a socket made there (a
    netlink socket of pyroute2's costs more than the rest of the namespace's creation)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def delete_netns(path: str) -> None:
    """Unpin and remove the namespace file at `path`; no error if it is absent.

    The namespace itself disappears once nothing else (a process, an open fd) holds it.
    """
    # Detach every mount stacked on the path (a double create_netns race could stack two).
    for _ in range(16):
        try:
            syscalls.umount2(path, syscalls.MNT_DETACH)
        except OSError:
            break  # EINVAL: not a mount point (any more); ENOENT: no such file
    _unlink_quiet(path)


def ensure_private_dir(directory: str) -> None:
    """Make `directory` a mount point of itself with private propagation (idempotent).

    Like `ip netns` does with /run/netns: a process that copies the mount namespace (a container
    runner) can then detach the whole directory in its copy, dropping its references to every
    namespace pinned there, without the detach propagating back to us.
    """
    os.makedirs(directory, exist_ok=True)
    if not syscalls.is_mountpoint(directory):
        # MS_REC so namespaces already pinned inside stay visible through the new mount.
        syscalls.mount(directory, directory, "none", syscalls.MS_BIND | syscalls.MS_REC)
    syscalls.mount("none", directory, None, syscalls.MS_PRIVATE | syscalls.MS_REC)


@contextmanager
def entered(target: str | int) -> Iterator[None]:
    """Run the body with the current thread inside the network namespace `target`.

    `target` is a namespace file path or an open namespace fd. The thread's original namespace is
    always restored, also when the body raises.
    """
    original = os.open(_SELF_NET, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if isinstance(target, int):
            syscalls.setns(target, syscalls.CLONE_NEWNET)
        else:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.setns(fd, syscalls.CLONE_NEWNET)
            finally:
                os.close(fd)
        try:
            yield
        finally:
            # If this fails the thread is stranded in the wrong namespace: let it propagate.
            syscalls.setns(original, syscalls.CLONE_NEWNET)
    finally:
        os.close(original)
