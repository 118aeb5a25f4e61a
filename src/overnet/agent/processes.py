"""Container processes: starting detached ones, learning when any of them ends, stopping them.

A pidfd becomes readable when its process ends, whether it is our child (detached containers
this run started), the CLI's (foreground containers) or nobody's (containers adopted after an
agent restart), so one mechanism serves all three.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import Callable

from ..runtime import process


class ProcessWatcher:
    def __init__(self, on_exit: Callable[[str, int | None], None]) -> None:
        """on_exit(container id, exit code or None when unknown) runs on the event loop."""
        self._on_exit = on_exit
        self._children: dict[str, subprocess.Popen] = {}
        self._pidfds: dict[str, int] = {}
        self._done: dict[str, asyncio.Event] = {}

    def spawn(self, cid: str, spec: process.ContainerSpec, log_path: str) -> int:
        with open(log_path, "ab") as logf:
            proc = process.spawn(spec, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT)
        self._children[cid] = proc
        return proc.pid

    def watch(self, cid: str, pid: int, start_time: int | None) -> None:
        loop = asyncio.get_running_loop()
        self._done[cid] = asyncio.Event()
        try:
            fd = process.open_pidfd(pid, start_time or None)
        except OSError:     # already gone (or its PID reused): it ended
            loop.call_soon(self._ended, cid, pid, None)
            return
        self._pidfds[cid] = fd
        loop.add_reader(fd, self._ended, cid, pid, fd)

    def _ended(self, cid: str, pid: int, fd: int | None) -> None:
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
            self._pidfds.pop(cid, None)
        proc = self._children.pop(cid, None)
        code = process.exit_code(proc.wait()) if proc is not None else None
        if proc is None:
            try:   # not our child (a foreground container is the CLI's): reap if it is ours
                _, status = os.waitpid(pid, os.WNOHANG)
                code = os.waitstatus_to_exitcode(status) if status else None
            except ChildProcessError:
                pass
        self._on_exit(cid, code)

    def finished(self, cid: str) -> None:
        """The owner has dealt with the exit (network torn down): release waiters."""
        ev = self._done.get(cid)
        if ev is not None:
            ev.set()

    async def stop(self, cid: str, pid: int, start_time: int, sig: int, timeout: float) -> None:
        """Send `sig`; SIGKILL after `timeout`; return once the owner called finished()."""
        if process.alive(pid, start_time):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        ev = self._done.get(cid)
        if ev is None:
            return
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            if process.alive(pid, start_time):
                os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(ev.wait(), 10)

    def forget(self, cid: str) -> None:
        self._done.pop(cid, None)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._pidfds.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._pidfds.clear()
