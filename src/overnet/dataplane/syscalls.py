"""Thin ctypes wrappers for the Linux calls Python 3.11's `os` lacks.

setns/unshare act on the calling *thread* for network and UTS namespaces, which is how the
agent enters a namespace in-process: one worker thread steps in, opens a netlink socket
(which stays bound to that namespace) and steps back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
           f"mount {source} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def is_mountpoint(path: str) -> bool:
    """True if `path` is the target of a mount in this mount namespace."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if line.split()[4] == real:
                    return True
    except OSError:
        pass
    return False


# New mount API (Linux >= 5.2; MOVE_MOUNT_BENEATH needs >= 6.5). Used to swap a bind-mounted
# file inside a container atomically: clone the new file as a detached mount, slide it *under*
# the current mount, then lazily unmount the one on top. The syscall numbers are the same on
# every architecture that uses the generic syscall table (x86_64, arm64, riscv, ...).
AT_FDCWD = -100
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_BENEATH = 0x200
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429

_libc.syscall.restype = ctypes.c_long


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
              dirfd: int = AT_FDCWD) -> int:
    """Return an fd for (with OPEN_TREE_CLONE: a detached copy of) the mount at `path`."""
    fd = _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(dirfd),
                       ctypes.c_char_p(os.fsencode(path)), ctypes.c_uint(flags))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path}: {os.strerror(err)}")
    return int(fd)


def move_mount(from_fd: int, to_path: str, flags: int = 0, from_path: str = "",
               to_dirfd: int = AT_FDCWD) -> None:
    """Attach the mount `from_fd` (with MOVE_MOUNT_F_EMPTY_PATH) on `to_path`."""
    ret = _libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(from_fd),
                        ctypes.c_char_p(os.fsencode(from_path)), ctypes.c_int(to_dirfd),
                        ctypes.c_char_p(os.fsencode(to_path)), ctypes.c_uint(flags))
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"move_mount on {to_path}: {os.strerror(err)}")
