"""Starting processes in containers: detached (the agent's), in the foreground (the CLI's, on
the caller's terminal), and exec into a running one.

Python only tells the parent "Exception occurred in preexec_fn", so the child also writes its
error message to a close-on-exec pipe and the parent re-raises it as ContainerStartError.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from . import confine
from .confine import ContainerStartError
from .spec import DEFAULT_PATH, ContainerSpec, container_env

# What subprocess accepts for stdin/stdout/stderr.
Stdio = int | IO[Any] | None


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
        # (Namespaces must be entered between fork and exec: there is no other place.)
        return subprocess.Popen(list(args), preexec_fn=child,  # noqa: PLW1509
                                close_fds=True, **kwargs)
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
    """Start the container's process (detached containers: the agent's use). The process
    the Popen stands for is the one to watch, signal and enter (see supervise.py)."""
    return _popen(spec.cmd, lambda: confine.enter(spec), stdin=stdin, stdout=stdout,
                  stderr=stderr, env=container_env(spec), start_new_session=new_session)


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
        saved = [(s, signal.signal(s, signal.SIG_IGN))
                 for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTTOU)]
    try:
        proc = _popen(args, child, env=dict(env), stdin=stdin, start_new_session=False)
        if on_start is not None:
            try:
                on_start(proc.pid)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        code = exit_code(proc.wait())
        _reclaim_terminal()
        return code
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)


def _reclaim_terminal() -> None:
    """An interactive shell in the container made itself the terminal's foreground group;
    inside a PID namespace it cannot hand the terminal back (our group is invisible there), so
    take it back once that group is gone. Not when someone else has it (we run in the
    background)."""
    try:
        if not os.isatty(0):
            return
        group = os.tcgetpgrp(0)
        if group == os.getpgrp():
            return
        try:
            os.killpg(group, 0)
            return
        except ProcessLookupError:
            os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass


def run_foreground(spec: ContainerSpec, on_start: Callable[[int], None] | None = None,
                   interactive: bool = True) -> int:
    """Run the container attached to the caller's stdin/stdout/stderr (and terminal, if any);
    return its exit status (128+N if killed by signal N). `on_start(pid)` runs once the
    process exists (the CLI tells the agent); if it raises, the process is killed."""
    return _run_foreground(spec.cmd, lambda: confine.enter(spec),
                           container_env(spec, _caller_term()),
                           stdin=None if interactive else subprocess.DEVNULL, on_start=on_start)


def _command_pid(pid: int, contained: bool) -> int:
    """The container's command process, under its waiter and init (see supervise.py)."""
    if not contained:
        return pid
    for _ in range(2):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
        except OSError:
            return pid
        if not kids:
            return pid
        pid = int(kids[0])   # the first child: the init's later ones are adopted orphans
    return pid


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
    fds, contained = confine.open_ns_fds(pid)
    try:
        environ = _exec_env(_command_pid(pid, contained), env, _caller_term() if tty else None)
        return _run_foreground(cmd, lambda: confine.join(fds, contained), environ,
                               stdin=None if interactive else subprocess.DEVNULL)
    finally:
        confine.close_ns_fds(fds)


def exec_popen(pid: int, cmd: Sequence[str], stdin: Stdio, stdout: Stdio, stderr: Stdio,
               env: Mapping[str, str] | None = None, new_session: bool = True
               ) -> subprocess.Popen:
    """Start `cmd` inside the container whose process is `pid`."""
    fds, contained = confine.open_ns_fds(pid)
    try:
        environ = _exec_env(_command_pid(pid, contained), env, None)
        return _popen(cmd, lambda: confine.join(fds, contained), stdin=stdin, stdout=stdout,
                      stderr=stderr, env=environ, start_new_session=new_session)
    finally:
        confine.close_ns_fds(fds)
