"""The agent's one kernel thread.

Every netlink call runs on this thread: setns moves only the calling thread, and the Kernel's
cached netlink sockets are not thread-safe, so one thread owns them all. Coroutines hand it
work with `await kernel_thread.run(fn, *args)`, where fn receives the Kernel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .kernel import Kernel

T = TypeVar("T")


class KernelThread:
    """One thread owning one Kernel; `host_ns` is the Kernel's home (default: the agent's)."""

    def __init__(self, host_ns: str | None = None) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kernel")
        self._host_ns = host_ns
        self._kernel: Kernel | None = None

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        if self._kernel is None:
            self._kernel = Kernel(self._host_ns)
        return fn(self._kernel, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._call, fn, args))

    def close(self) -> None:
        def shutdown() -> None:
            if self._kernel is not None:
                self._kernel.close()
        self._pool.submit(shutdown).result()
        self._pool.shutdown(wait=True)
