"""The waiter's and the init's loop (see supervise.py), run in an interpreter of its own.

Both start as forks of the agent (or the CLI) and exec this file with `python -I -S`: a fork
that stayed would keep a copy-on-write snapshot of the agent's whole heap alive, one per
container (measured: ~15 MB per container for the pair, 24 GB full at 1,000 containers),
where a fresh interpreter costs ~3.5 MB. So this file imports only `os` and `signal` and
nothing of overnet: it must start fast and small, and run inside the container's mounts.

    python -I -S reaper.py CHILD_PID REAP_ALL(0|1) NAME

The signal mask (blocked: every signal passed on, and SIGCHLD), pending signals, children and
the parent-death signal all survive the exec, so nothing is lost in between.
"""

from __future__ import annotations

import os
import signal
import sys

SI_KERNEL = 0x80
_NOT_PASSED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGSEGV, signal.SIGBUS,
               signal.SIGILL, signal.SIGFPE, signal.SIGTRAP, signal.SIGSYS}
PASSED = {s for s in signal.valid_signals() if s < signal.SIGRTMIN and s not in _NOT_PASSED}
WAITED = PASSED | {signal.SIGCHLD}


def exit_status(status: int) -> int:
    """A wait status as a shell reports it: 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def loop(child: int, reap_all: bool) -> None:
    """Pass signals on to `child` until it exits, then exit with its status. The init also
    reaps every orphan that ends up with it (reap_all). A signal the kernel sent to the
    whole foreground process group (si_code SI_KERNEL: the terminal's ^C) reached the
    command too and is not passed on again."""
    while True:
        info = signal.sigwaitinfo(WAITED)
        if info.si_signo == signal.SIGCHLD:
            status = reap(child, reap_all)
            if status is not None:
                os._exit(exit_status(status))
        elif info.si_code != SI_KERNEL:
            try:
                os.kill(child, info.si_signo)
            except ProcessLookupError:
                pass


def reap(child: int, reap_all: bool) -> int | None:
    """Reap what has ended; the status of `child` if it has."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1 if reap_all else child, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = status


def main(argv: list[str]) -> None:
    try:
        child, reap_all, name = int(argv[1]), argv[2] == "1", argv[3]
        try:
            with open("/proc/self/comm", "w") as f:   # what ps shows, not "python3"
                f.write(name[:15])
        except OSError:
            pass
        loop(child, reap_all)
    finally:
        os._exit(255)


if __name__ == "__main__":
    main(sys.argv)
