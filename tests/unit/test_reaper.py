"""The container's waiter and init loop, compiled (cfront/reaper.c) and in Python
(runtime/reaper.py, where no compiler was there): the same behaviour, checked on real
processes. A helper blocks the passed signals (as runtime/supervise.py does before its fork),
forks the command and execs the reaper for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from overnet import cfront
from overnet.cli import launcher
from overnet.runtime.supervise import REAPER

HELPER = """
import os, signal, sys
from overnet.runtime.reaper import WAITED
signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
pid = os.fork()
if pid == 0:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED)
    os.execvp(sys.argv[2], sys.argv[2:])
exe, args = sys.argv[1], [str(pid), "0", "tst-reaper"]
if exe.endswith(".py"):
    os.execv(sys.executable, [sys.executable, "-I", "-S", exe, *args])
os.execv(exe, [exe, *args])
"""


@pytest.fixture(scope="module", params=["compiled", "python"])
def reaper(request, tmp_path_factory) -> str:
    if request.param == "python":
        return REAPER
    out = str(tmp_path_factory.mktemp("reaper") / "overnet-reaper")
    binary, why = cfront.compile_c(launcher.REAPER_SOURCE, out)
    assert binary is not None, why          # gcc is in scripts/setup.sh
    return out


def start(reaper: str, *cmd: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HELPER, reaper, *cmd])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:          # the reaper runs, under its own name
        try:
            with open(f"/proc/{proc.pid}/comm") as f:
                if f.read().strip() == "tst-reaper":
                    return proc
        except FileNotFoundError:
            break
        time.sleep(0.01)
    return proc


def test_the_command_s_exit_status_is_the_reaper_s(reaper):
    proc = start(reaper, "sh", "-c", "exit 7")
    assert proc.wait(timeout=10) == 7


def test_a_signal_to_the_reaper_reaches_the_command(reaper):
    proc = start(reaper, "sleep", "30")
    with open(f"/proc/{proc.pid}/comm") as f:
        assert f.read().strip() == "tst-reaper"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM     # the shell's 143, passed on
    proc = start(reaper, "sleep", "30")
    os.kill(proc.pid, signal.SIGUSR1)        # sleep's default action for it: to die
    assert proc.wait(timeout=10) == 128 + signal.SIGUSR1
