"""Turning a forked child into a container, or into a process inside one (`exec`).

Everything here runs between fork and exec, as subprocess's preexec_fn, in the single-threaded
child: unshare(CLONE_NEWNS) and setns into a mount namespace both refuse to work in a
multi-threaded process such as the agent. Errors are ContainerStartError naming the step.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from ..dataplane import syscalls as sc
from . import caps, supervise
from .spec import ContainerSpec

CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8


class ContainerStartError(subprocess.SubprocessError):
    """The child failed while entering the container, before exec; the message says where."""


def _step(what: str, fn: Callable[..., object], *args: Any) -> None:
    try:
        fn(*args)
    except OSError as e:
        # syscalls' errors repeat the call in their text: keep just the reason.
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise ContainerStartError(f"{what}: {reason}") from None


def _setns_path(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, nstype)
    finally:
        os.close(fd)


def enter(spec: ContainerSpec) -> None:
    """Turn the current (forked, single-threaded) process into the container; for a contained
    one, return only in the grandchild that is to exec the command (see supervise.py)."""
    if spec.netns:   # None: host networking, stay in the caller's network namespace
        _step(f"cannot join network namespace {spec.netns}", _setns_path, spec.netns,
              sc.CLONE_NEWNET)
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | (0 if spec.privileged else CLONE_NEWPID)
    _step("cannot create the container's namespaces", sc.unshare, flags)
    # Our mount namespace is a copy of the host's: make it private so our mounts do not
    # propagate back to the host (and the host's mounts do not reach us).
    _step("cannot make / private", sc.mount, None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    if spec.netns_dir:
        # The copy holds a reference to every pinned network namespace: drop them, or a dead
        # network would live as long as this container.
        _step(f"cannot detach netns directory {spec.netns_dir} (is it a mount point?)",
              sc.umount2, spec.netns_dir, sc.MNT_DETACH)
    for src, dst in ((spec.hosts_file, "/etc/hosts"), (spec.hostname_file, "/etc/hostname"),
                     (spec.resolv_file, "/etc/resolv.conf")):
        _step(f"cannot bind-mount {src} on {dst}", sc.mount, src, dst, None, sc.MS_BIND)
    _step(f"cannot set hostname {spec.hostname!r}", sc.sethostname, spec.hostname)
    if not spec.privileged:
        hide(spec.hide)   # after the bind mounts: their sources may live under these
    _step(f"cannot change directory to {spec.cwd}", os.chdir, spec.cwd)
    if not spec.privileged:
        _contain(mount_proc, f"overnet-run {spec.id[:12]}")


def hide(paths: list[str]) -> None:
    """Cover each directory with an empty read-only tmpfs (in our mount namespace only)."""
    for path in sorted(set(paths), key=len):   # a parent first: it hides its children too
        if not os.path.isdir(path):   # absent, or already under a hidden parent
            continue
        _step(f"cannot hide {path}", sc.mount, "tmpfs", path, "tmpfs",
              sc.MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0755")


def mount_proc() -> None:
    """A /proc of the container's own PID namespace (the caller must be inside it)."""
    _step("cannot mount /proc", sc.mount, "proc", "/proc", "proc",
          MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _contain(init_setup: Callable[[], None] | None, name: str) -> None:
    terminal = _on_terminal()

    def command_setup() -> None:
        if terminal:
            _step("cannot take the terminal", _take_terminal)
        _step("cannot drop capabilities", caps.restrict)

    try:
        supervise.fork_into(command_setup, init_setup, name)
    except supervise.StartError as e:
        raise ContainerStartError(str(e)) from None


def _on_terminal() -> bool:
    """Whether we run in the foreground of a terminal (the CLI's `run -it`, `exec -it`)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _take_terminal() -> None:
    """Make the command its own process group, in the terminal's foreground. The caller's
    group is invisible inside the PID namespace: a shell there would see process group 0,
    fail to hand the terminal back on exit and report an error. The caller takes the
    terminal back once the command's group is gone. (SIGTTOU is blocked here, so the
    terminal lets a background group do this.)

    ^Z is ignored, as in a Docker container: it would stop the command but not the caller
    (nothing in here can stop a process outside), and leave the terminal hung. Interactive
    shells do their own job control."""
    os.setpgid(0, 0)
    os.tcsetpgrp(0, os.getpgrp())
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)


# --- exec: joining a running container ------------------------------------------------------


def _same_ns(a: str, b: str) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_contained(pid: int) -> bool:
    """Whether the container whose (waiter) process is `pid` has its own PID namespace."""
    return not _same_ns(f"/proc/{pid}/ns/pid_for_children", "/proc/self/ns/pid")


NsFds = list[tuple[int, int]]


def open_ns_fds(pid: int) -> tuple[NsFds, bool]:
    """Open the namespaces of the container whose process is `pid`, in the parent: errors
    surface plainly, and the fds keep the namespaces alive until the child has joined them.
    Also says whether the container is contained (then exec enters its PID namespace)."""
    fds: NsFds = []
    try:
        contained = is_contained(pid)
        names = [("net", sc.CLONE_NEWNET), ("uts", sc.CLONE_NEWUTS)]
        if contained:
            names.append(("pid_for_children", CLONE_NEWPID))
        names.append(("mnt", sc.CLONE_NEWNS))   # last: it moves our root and cwd
        for name, nstype in names:
            fds.append((os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), nstype))
    except FileNotFoundError:
        close_ns_fds(fds)
        raise ProcessLookupError(errno.ESRCH, f"container process {pid} does not exist") from None
    except BaseException:
        close_ns_fds(fds)
        raise
    return fds, contained


def close_ns_fds(fds: NsFds) -> None:
    for fd, _ in fds:
        os.close(fd)


def join(fds: NsFds, contained: bool) -> None:
    """preexec for exec: join the container's namespaces; in a contained one, return only in
    the child that is inside its PID namespace, with its capabilities."""
    for fd, nstype in fds:
        _step(f"cannot join namespace (type {nstype:#x})", sc.setns, fd, nstype)
    os.chdir("/")
    if contained:
        _contain(None, "overnet-exec")
