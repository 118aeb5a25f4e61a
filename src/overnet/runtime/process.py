"""The light container runner: start, enter and inspect container processes.

A container is a host process in its own network, UTS and mount namespaces. It shares the
host's filesystem, except that its /etc/hosts, /etc/hostname and /etc/resolv.conf are
bind-mounted from files in the container's state directory.

Everything that must happen between fork and exec (joining/creating namespaces, mounts,
hostname) runs as subprocess's preexec_fn, in the single-threaded child: unshare(CLONE_NEWNS)
and setns into a mount namespace both refuse to work in a multi-threaded process such as the
agent. Python only tells the parent "Exception occurred in preexec_fn", so the child also writes
its error message to a close-on-exec pipe and the parent re-raises it as ContainerStartError.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn

from overnet.dataplane import syscalls as sc

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where systemd-resolved keeps the real upstream servers when /etc/resolv.conf only lists its
# 127.0.0.53 stub (the same fallback Docker uses).
SYSTEMD_RESOLV = "/run/systemd/resolve/resolv.conf"

# What subprocess accepts for stdin/stdout/stderr.
Stdio = int | IO[Any] | None


class ContainerStartError(subprocess.SubprocessError):
    """The child failed while entering the container, before exec; the message says where."""


@dataclass
class ContainerSpec:
    id: str                      # 64 hex characters
    hostname: str
    netns: str                   # pinned network namespace file
    netns_dir: str | None        # directory of pinned namespaces, detached inside the container
    hosts_file: str
    hostname_file: str
    resolv_file: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"


# ---------------------------------------------------------------------------------------------
# Files


def _write_file(path: str, content: str) -> None:
    # Write-then-rename so a half-written file is never visible under `path`.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                               prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def filter_resolv_conf(text: str) -> tuple[str, bool]:
    """Drop loopback nameservers (unreachable from the container's network namespace).

    Returns the new text and whether a nameserver line remains.
    """
    out: list[str] = []
    has_server = False
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            if _is_loopback(words[1]):
                continue
            has_server = True
        out.append(line)
    return "".join(f"{line}\n" for line in out), has_server


def prepare_files(spec: ContainerSpec, hosts_content: str,
                  resolv_source: str = "/etc/resolv.conf") -> None:
    """Write the container's hostname, resolv.conf and hosts files into its state directory."""
    _write_file(spec.hostname_file, f"{spec.hostname}\n")
    try:
        with open(resolv_source) as f:
            resolv, has_server = filter_resolv_conf(f.read())
    except FileNotFoundError:  # no DNS configured on the host: none in the container either
        resolv, has_server = "", False
    if not has_server and resolv_source == "/etc/resolv.conf" and os.path.exists(SYSTEMD_RESOLV):
        with open(SYSTEMD_RESOLV) as f:
            resolv, _ = filter_resolv_conf(f.read())
    _write_file(spec.resolv_file, resolv)
    _write_file(spec.hosts_file, hosts_content)


def container_env(spec: ContainerSpec, term: str | None = None) -> dict[str, str]:
    """The environment of a container's process: sane defaults overridden by spec.env."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": spec.hostname}
    if term:
        env["TERM"] = term
    env.update(spec.env)
    return env


# ---------------------------------------------------------------------------------------------
# Entering namespaces (runs in the forked child, before exec)


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
    """Turn the current (forked, single-threaded) process into the container. Raises
    ContainerStartError naming the failed step."""
    if spec.netns:   # None: host networking, stay in the caller's network namespace
        _step(f"cannot join network namespace {spec.netns}", _setns_path, spec.netns,
              sc.CLONE_NEWNET)
    _step("cannot create mount and UTS namespaces", sc.unshare, sc.CLONE_NEWNS | sc.CLONE_NEWUTS)
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
    _step(f"cannot change directory to {spec.cwd}", os.chdir, spec.cwd)


def _open_ns_fds(pid: int) -> list[tuple[int, int]]:
    """Open /proc/<pid>/ns/{net,uts,mnt} in the parent: errors surface plainly, and the fds
    keep the namespaces alive until the child has joined them."""
    fds: list[tuple[int, int]] = []
    try:
        for name, nstype in (("net", sc.CLONE_NEWNET), ("uts", sc.CLONE_NEWUTS),
                             ("mnt", sc.CLONE_NEWNS)):
            fds.append((os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), nstype))
    except FileNotFoundError:
        _close_ns_fds(fds)
        raise ProcessLookupError(errno.ESRCH, f"container process {pid} does not exist") from None
    except BaseException:
        _close_ns_fds(fds)
        raise
    return fds


def _close_ns_fds(fds: list[tuple[int, int]]) -> None:
    for fd, _ in fds:
        os.close(fd)


def _join(fds: list[tuple[int, int]]) -> None:
    """preexec for exec: join the container's namespaces (mnt last, it moves our root/cwd)."""
    for fd, nstype in fds:
        _step(f"cannot join namespace (type {nstype:#x})", sc.setns, fd, nstype)
    os.chdir("/")


# ---------------------------------------------------------------------------------------------
# Starting processes


def _popen(args: Sequence[str], preexec: Callable[[], None], **kwargs: Any) -> subprocess.Popen:
    """Popen with a preexec whose error message reaches the parent."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def child() -> None:
        try:
            preexec()
        except BaseException as e:
            try:
                os.write(wfd, str(e).encode(errors="replace")[:4096])
            except OSError:
                pass
            raise

    try:
        return subprocess.Popen(list(args), preexec_fn=child, close_fds=True, **kwargs)
    except subprocess.SubprocessError:
        # Popen has reaped the child, so its message (if any) is already in the pipe.
        try:
            msg = os.read(rfd, 4096).decode(errors="replace")
        except BlockingIOError:
            msg = ""
        if msg:
            raise ContainerStartError(msg) from None
        raise
    finally:
        os.close(rfd)
        os.close(wfd)


def spawn(spec: ContainerSpec, stdin: Stdio, stdout: Stdio, stderr: Stdio,
          new_session: bool = True) -> subprocess.Popen:
    """Start the container's process (detached containers: the agent's use)."""
    return _popen(spec.cmd, lambda: enter(spec), stdin=stdin, stdout=stdout, stderr=stderr,
                  env=container_env(spec), start_new_session=new_session)


def exit_code(returncode: int) -> int:
    """Popen's returncode as a shell reports it: 128+N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _caller_term() -> str | None:
    return os.environ.get("TERM", "xterm") if os.isatty(0) else None


def _run_foreground(args: Sequence[str], preexec: Callable[[], None], env: Mapping[str, str],
                    stdin: Stdio = None, on_start: Callable[[int], None] | None = None) -> int:
    # The child stays in our process group, like a shell's foreground job: ^C, ^\ and ^Z from
    # the terminal reach it directly and job control keeps working (^Z stops us both). We only
    # ignore ^C and ^\ ourselves, to outlive the child and report its status. The child gets
    # the default dispositions back before exec (exec keeps ignored signals ignored).
    def child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        preexec()

    in_main = threading.current_thread() is threading.main_thread()
    saved = []
    if in_main:  # signal.signal only works there
        saved = [(s, signal.signal(s, signal.SIG_IGN)) for s in (signal.SIGINT, signal.SIGQUIT)]
    try:
        proc = _popen(args, child, env=dict(env), stdin=stdin, start_new_session=False)
        if on_start is not None:
            try:
                on_start(proc.pid)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        return exit_code(proc.wait())
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)


def run_foreground(spec: ContainerSpec, on_start: Callable[[int], None] | None = None,
                   interactive: bool = True) -> int:
    """Run the container attached to the caller's stdin/stdout/stderr (and terminal, if any);
    return its exit status (128+N if killed by signal N). `on_start(pid)` runs once the
    process exists (the CLI tells the agent); if it raises, the process is killed."""
    return _run_foreground(spec.cmd, lambda: enter(spec), container_env(spec, _caller_term()),
                           stdin=None if interactive else subprocess.DEVNULL, on_start=on_start)


def _exec_env(pid: int, env: Mapping[str, str] | None, term: str | None) -> dict[str, str]:
    # Like `docker exec`: start from the container's environment.
    base: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        raw = b""
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            base[key] = value
    base.setdefault("PATH", DEFAULT_PATH)
    if term:
        base["TERM"] = term
    base.update(env or {})
    return base


def exec_in(pid: int, cmd: Sequence[str], env: Mapping[str, str] | None = None,
            tty: bool = False, interactive: bool = True) -> int:
    """Run `cmd` inside the container whose process is `pid`, in the foreground with the
    caller's stdio (stdin only if `interactive`); return its exit status."""
    if tty and not os.isatty(0):
        raise ValueError("the input device is not a TTY")
    fds = _open_ns_fds(pid)
    try:
        return _run_foreground(cmd, lambda: _join(fds),
                               _exec_env(pid, env, _caller_term() if tty else None),
                               stdin=None if interactive else subprocess.DEVNULL)
    finally:
        _close_ns_fds(fds)


def exec_popen(pid: int, cmd: Sequence[str], stdin: Stdio, stdout: Stdio, stderr: Stdio,
               env: Mapping[str, str] | None = None, new_session: bool = True
               ) -> subprocess.Popen:
    """Start `cmd` inside the container whose process is `pid`."""
    fds = _open_ns_fds(pid)
    try:
        return _popen(cmd, lambda: _join(fds), stdin=stdin, stdout=stdout, stderr=stderr,
                      env=_exec_env(pid, env, None), start_new_session=new_session)
    finally:
        _close_ns_fds(fds)


# ---------------------------------------------------------------------------------------------
# Replacing a bind-mounted file
#
# Writing a bind-mounted file in place is not atomic, and a rename on the host does not reach
# the mount. Stacking the new file on top and then unmounting the old one underneath (through
# an O_PATH fd) does not work either: umount resolves to the topmost mount and removes the new
# file. What works is the reverse, MOVE_MOUNT_BENEATH (Linux 6.5): put the new file under the
# current mount, then unmount the top one.
#
# Entering a mount namespace needs a single-threaded process, so the swap runs in a forked
# child. The fork (copying the agent's page tables) costs far more than the mount calls, so
# a batch of swaps, e.g. /etc/hosts of every container after a cluster change, shares one fork.

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
        if sc.is_mountpoint(swap.target):
            sc.umount2(swap.target, sc.MNT_DETACH)
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


# ---------------------------------------------------------------------------------------------
# Process identity


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
