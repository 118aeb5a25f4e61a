"""One coalescing watch and one periodic resync for everything the agent keeps in step with
the store: every store event names a *target* (a network, or a feature such as host
subnets); a burst of events runs each dirty target once. The resync runs every target again,
reading the kernel rather than trusting memory, so anything changed behind the agent's back
comes back within one period (each agent's a little shorter than the last, at random: see
periodic.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from ..periodic import jittered
from ..store.base import Event

log = logging.getLogger(__name__)

Target = Callable[[str, bool], Awaitable[None]]     # (target key, verify) -> None


class Reconciler:
    def __init__(self, every: float) -> None:
        self.every = every
        self._sources: list[tuple[asyncio.Queue, Callable[[Event], str | None]]] = []
        self._routes: list[tuple[str, Target]] = []       # key prefix -> handler
        self._active: list[Callable[[], set[str]]] = []   # keys the resync runs
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self.runs = 0
        self.failures = 0
        self.on_run: Callable[[str, float, bool], None] = lambda t, s, ok: None

    def source(self, queue: asyncio.Queue, classify: Callable[[Event], str | None]) -> None:
        """Events from `queue` (a Mirror subscription) mark `classify(event)` dirty."""
        self._sources.append((queue, classify))

    def route(self, prefix: str, handler: Target, active: Callable[[], set[str]]) -> None:
        """Targets starting with `prefix` go to `handler`; `active()` lists those the
        periodic resync re-checks."""
        self._routes.append((prefix, handler))
        self._active.append(active)

    def mark(self, *targets: str) -> None:
        self._dirty.update(targets)
        self._wake.set()

    async def run_now(self, target: str, verify: bool = False) -> None:
        for prefix, handler in self._routes:
            if target.startswith(prefix):
                self.runs += 1
                started, ok = time.monotonic(), False
                try:
                    await handler(target, verify)
                    ok = True
                except Exception as e:   # noqa: BLE001 - the next event or resync retries
                    self.failures += 1
                    log.warning("reconciling %s failed: %s", target, e, exc_info=e)
                self.on_run(target, time.monotonic() - started, ok)    # metrics, readiness
                return

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        out: dict[str, Callable[[], Awaitable[None]]] = {"reconcile": self._work,
                                                        "resync": self._resync}
        for i, (queue, classify) in enumerate(self._sources):
            out[f"watch-{i}"] = lambda q=queue, c=classify: self._pump(q, c)
        return out

    async def _pump(self, queue: asyncio.Queue, classify: Callable[[Event], str | None]) -> None:
        while True:
            batch = await queue.get()
            self.mark(*(t for t in map(classify, batch) if t))

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for target in sorted(dirty):
                await self.run_now(target)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(jittered(self.every))
            for active in self._active:
                for target in sorted(active()):
                    await self.run_now(target, verify=True)
