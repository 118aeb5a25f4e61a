"""/etc/hosts of the built-in runner's containers, kept current as the cluster changes.

Running containers get a new file mounted beneath the old one (an atomic swap, all swaps of
one refresh in one fork); containers not running yet simply get the file rewritten."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

from ..fsutil import write_atomic
from ..runtime import process
from .state import Container, LocalState

log = logging.getLogger(__name__)


class HostsFiles:
    def __init__(self, state: LocalState) -> None:
        self.state = state
        # container id -> digest of what its file holds (the files themselves grow with the
        # network: 1,000 names make 1,000 files of 1,000 lines on a host running them all)
        self.content: dict[str, bytes] = {}
        self._lock = asyncio.Lock()

    def write_initial(self, c: Container, content: str) -> None:
        self.content[c.id] = _digest(content)

    def forget(self, cid: str) -> None:
        self.content.pop(cid, None)

    def adopt(self, c: Container) -> None:
        """After a restart: what the container sees now; rewritten only if it changed."""
        try:
            with open(c.hosts_file) as f:
                self.content[c.id] = _digest(f.read())
        except OSError:
            pass

    async def refresh(self, wanted: list[tuple[Container, str]]) -> None:
        """Give each container the content it should have, changing only what differs."""
        async with self._lock:
            swaps: dict[int, tuple[Container, str]] = {}
            for c, content in wanted:
                digest = _digest(content)
                if not c.hosts_file or self.content.get(c.id) == digest:
                    continue
                self.content[c.id] = digest
                if c.status != "running" or not c.pid:
                    write_atomic(c.hosts_file, content)   # not mounted anywhere yet
                    continue
                new = os.path.join(self.state.container_dir(c.id),
                                   f"hosts.{time.monotonic_ns()}")
                write_atomic(new, content)
                swaps[c.pid] = (c, new)
            if swaps:
                await self._swap(swaps)

    async def _swap(self, swaps: dict[int, tuple[Container, str]]) -> None:
        failures = await asyncio.get_running_loop().run_in_executor(
            None, process.replace_hosts_many, {pid: new for pid, (_, new) in swaps.items()})
        for pid, (c, new) in swaps.items():
            old = c.hosts_file
            if pid in failures:
                log.warning("container %s: could not update /etc/hosts: %s", c.name,
                            failures[pid])
                self.content.pop(c.id, None)
                old = new
            else:
                c.hosts_file = new
                self.state.save(c)
            try:
                os.unlink(old)
            except FileNotFoundError:
                pass



def _digest(content: str) -> bytes:
    return hashlib.blake2b(content.encode(), digest_size=16).digest()
