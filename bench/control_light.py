"""Hosts without an agent, for the simulated control plane's workers: plain watchers (one
etcd client each, as an agent's mirror holds it) and the records such hosts would have
written. They give etcd the load of thousands of hosts without the agents' own work."""

from __future__ import annotations

import asyncio
import time

from overnet.store import keys

CALL_TIMEOUT = 120.0     # the simulation may run far behind on a loaded machine (nice 19)
EVENTS: dict[int, int] = {}                  # id(mirror or watcher) -> events received
SEEN: dict[str, dict[int, float]] = {}       # endpoint key -> id(mirror or watcher) -> when


def address(index: int) -> str:
    """Host `index`'s underlay address, 100.64.0.0/10 (enough for 4 million hosts)."""
    n = (100 << 24) + (64 << 16) + index + 1
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class LightHosts:
    """Mixed into the worker: needs self.endpoint, self.watchers, self.tasks, _writer()."""

    async def _watch(self, store, prefix: str, rev: int) -> None:
        async for batch in store.watch(prefix, rev):
            now = time.monotonic()
            EVENTS[id(store)] = EVENTS.get(id(store), 0) + len(batch)
            for e in batch:      # watchers start after the bulk loads: these are the probes
                if e.type == "put" and e.key.startswith(keys.ENDPOINTS):
                    SEEN.setdefault(e.key, {})[id(store)] = now

    async def op_watchers(self, prefixes: list[str], parallel: int = 20) -> dict:
        """One more watcher per prefix in `prefixes`, each on its own connection (as an
        agent's mirror holds it)."""
        from overnet.store.base import StoreUnavailable
        from overnet.store.etcd import EtcdStore
        sem = asyncio.Semaphore(parallel)

        async def one(prefix: str) -> None:
            async with sem:
                st = EtcdStore(self.endpoint, call_timeout=CALL_TIMEOUT,
                               connect_timeout=CALL_TIMEOUT)
                for attempt in range(3):    # a connection's handshake may time out under load
                    try:
                        await st.connect()
                        break
                    except StoreUnavailable:    # NoMember: try again, then fail
                        if attempt == 2:
                            raise
                _, rev = await st.list(keys.ROOT + "probe-")  # the revision to watch from
                self.watchers.append(st)
                self.tasks.append(asyncio.create_task(self._watch(st, prefix, rev + 1)))
        t = time.monotonic()
        await asyncio.gather(*(one(p) for p in prefixes))
        return {"seconds": time.monotonic() - t, "watchers": len(self.watchers),
                "rss_mb": rss_mb()}

    async def op_unwatch(self) -> dict:
        for task in self.tasks[1:]:
            task.cancel()
        del self.tasks[1:]
        for st in self.watchers:
            await st.close()
        self.watchers = []
        return {}

    async def op_put(self, key: str, size: int) -> dict:
        """One endpoint-sized write; when it started and the revision it made."""
        writer = await self._writer()
        t0 = time.monotonic()
        rev = await writer.put(key, b"x" * size)
        return {"t0": t0, "t1": time.monotonic(), "revision": rev, "key": key}

    async def op_bulk(self, prefixes: list[str], count: int, size: int, batch: int = 100) -> dict:
        """`count` endpoint-sized records, spread over `prefixes`, `batch` per transaction."""
        from overnet.store.base import Put
        st = await self._writer()
        t = time.monotonic()
        value = b"y" * size
        for lo in range(0, count, batch):
            await st.txn([], [Put(f"{prefixes[i % len(prefixes)]}b{i}", value)
                              for i in range(lo, min(count, lo + batch))])
        return {"seconds": time.monotonic() - t}
