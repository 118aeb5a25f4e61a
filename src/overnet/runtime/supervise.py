"""The processes between a contained container and whoever started it.

A PID namespace made by unshare(CLONE_NEWPID) (or joined by setns) holds the caller's
*children*, never the caller itself; and subprocess can only fork. So the process subprocess
forks (the one its caller, the agent or the CLI, knows by PID and waits for) stays outside and
forks again:

    agent or CLI
      └─ waiter      outside the PID namespace; passes signals on; exits as the container did
           └─ init   PID 1 inside: mounts /proc, reaps orphans, passes signals on
                └─ command   PID 2, with Docker's capabilities only

(`overnet exec` has no init of its own: its command becomes a child of the waiter directly,
inside the namespace, and the container's init adopts whatever it leaves behind.) The command
is not PID 1 because PID 1 ignores every signal it has no handler for: `kill -9 $$` in a shell,
^C, or the agent's SIGTERM would not stop it.

Once its set-up is done, each of waiter and init execs the compiled reaper (cfront/reaper.c),
or reaper.py in a small interpreter of its own where that was not built (a fork left as it was
would keep a copy of the agent's heap alive per container).
Waiter and init block the signals they pass on and take them with sigwaitinfo, which tells a
signal the terminal sent to the whole foreground process group (si_code SI_KERNEL: the command
got it too) from one sent to them alone (kill(2): pass it on).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from . import caps, reaper
from .reaper import WAITED

_MAX_FD = 2 ** 31 - 1
REAPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reaper.py")
# reaper.py compiled (cfront/reaper.c), written beside the interpreter at set-up when a C
# compiler was there: a process start instead of an interpreter's (~8 ms of CPU, ~3.5 MB).
REAPER_BIN = os.path.join(os.path.dirname(sys.executable), "overnet-reaper")


class StartError(Exception):
    """A step failed in a child of the waiter; the message says which."""


def fork_into(command_setup: Callable[[], None], init_setup: Callable[[], None] | None = None,
              name: str = "overnet-wait") -> None:
    """Call in subprocess's child, once it has made or joined the PID namespace. Returns only
    in the process that is to exec the command (inside the namespace), after command_setup();
    the caller becomes the waiter and never returns, unless a step failed: then it raises
    StartError. With init_setup, an init runs first (see the module's docstring). `name` is
    what ps on the host shows for the waiter."""
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)  # before fork: no signal lost
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(rfd)
        _start(wfd, command_setup, init_setup, saved)
        return
    os.close(wfd)
    # EOF once the command's process passed its set-up and exec closed its end (or the
    # process died); a message if a step failed.
    message = _read_all(rfd)
    os.close(rfd)
    if message:
        os.waitpid(child, 0)   # exits too, now that the failed one has
        raise StartError(message)
    _pass_signals(child, False, name)


def _start(wfd: int, command_setup: Callable[[], None], init_setup: Callable[[], None] | None,
           saved: set[int | signal.Signals]) -> None:
    try:
        if init_setup is not None:
            # The init must not outlive the waiter (a SIGKILLed container must die whole);
            # the kernel kills everything in the namespace when its init goes.
            caps.prctl(caps.PR_SET_PDEATHSIG, signal.SIGKILL)
            init_setup()
            command = os.fork()
            if command != 0:
                os.close(wfd)
                _pass_signals(command, True, "overnet-init")
        command_setup()
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
    except BaseException as e:  # noqa: BLE001 - reported to the waiter, which raises it
        try:
            os.write(wfd, str(e).encode(errors="replace")[:4096] or b"failed")
        finally:
            os._exit(255)


def _read_all(fd: int) -> str:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data.decode(errors="replace")


def _pass_signals(child: int, reap_all: bool, name: str) -> NoReturn:
    """Become the loop of reaper.py for `child`: by exec, into a small interpreter of its own
    (see reaper.py); should the exec fail, run the same loop here (under the parent's
    command line: ps then shows it)."""
    try:
        # Nothing of the parent's (the agent's sockets, the pipes subprocess reads) may stay
        # open here: the agent's clients would hang, and Popen would wait for EOF forever.
        os.closerange(3, _MAX_FD)
        argv = [REAPER, str(child), "1" if reap_all else "0", name]
        for exe, args in ((REAPER_BIN, argv[1:]), (sys.executable, ["-I", "-S", *argv])):
            try:
                os.execve(exe, [exe, *args], {})
            except OSError:
                pass
        reaper.main(argv)
    finally:
        os._exit(255)   # never return into the parent's stack
