"""The heap trim: glibc's malloc_trim is found, and the loop trims only after work."""

from __future__ import annotations

import asyncio

import pytest

from overnet.agent import memtrim


def test_malloc_trim_is_glibcs() -> None:
    trim = memtrim.malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)     # 1: memory was released, 0: none could be


def test_trims_only_after_work(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(memtrim, "malloc_trim", lambda: trims.append)
    work = [0]

    async def main() -> None:
        task = asyncio.create_task(memtrim.trim_loop(0.01, lambda: work[0]))
        await asyncio.sleep(0.1)
        first = len(trims)           # once: the first look finds work it has not seen
        work[0] += 1
        await asyncio.sleep(0.1)
        second = len(trims)
        task.cancel()
        assert (first, second) == (1, 2)

    asyncio.run(main())


def test_no_trim_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memtrim, "malloc_trim", lambda: None)
    asyncio.run(asyncio.wait_for(memtrim.trim_loop(0.01, lambda: 0), 1))   # returns at once
