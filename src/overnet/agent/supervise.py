"""Supervised background work: a loop that fails is logged with its traceback, counted and
started again with backoff; nothing dies silently."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, min_backoff: float = 0.2, max_backoff: float = 30.0) -> None:
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.restarts: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self.restarts.setdefault(name, 0)
        self._tasks[name] = asyncio.create_task(self._run(name, loop), name=name)

    async def _run(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        backoff = self.min_backoff
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await loop()
                log.warning("background loop %s returned: starting it again", name)
            except asyncio.CancelledError:
                raise
            except Exception as e:   # noqa: BLE001 - that is the point of a supervisor
                log.error("background loop %s failed: restarting in %.1fs", name, backoff,
                          exc_info=e)
                self.last_error[name] = f"{type(e).__name__}: {e}"
            self.restarts[name] += 1
            if asyncio.get_running_loop().time() - started > 60:
                backoff = self.min_backoff   # it ran well for a while: start over gently
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def running(self) -> dict[str, bool]:
        return {name: not t.done() for name, t in self._tasks.items()}

    async def stop(self) -> dict[str, str]:
        """Cancel every loop; returns the last error of each loop that ever failed."""
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        return dict(self.last_error)
