"""A worker of the simulated control plane: many overnet agents in one process.

Each agent is the real `overnet.agent.daemon.Agent` with its own etcd connection, liveness
lease and mirror of the store, over a FakeDataplane (no kernel state). The coordinator
(bench/control.py) drives the workers with one JSON command per line on stdin; each answer
is one line `ok {json}` or `error "message"` on stdout.

Every mirror is instrumented (Mirror._apply wrapped): it counts the watch events it receives
and notes, for each endpoint key, when it first saw it, in CLOCK_MONOTONIC, which every process
of the machine shares, so the coordinator can compare with the moment an attach started.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import os
import sys
import tempfile
import time

from overnet.store import keys
from overnet.store.mirror import Mirror

UNDERLAY = ipaddress.IPv4Network("100.64.0.0/10")
RESYNC = 60.0
CALL_TIMEOUT = 30.0
FANOUT = keys.ENDPOINTS + "fanout/"         # keys the plain watchers' probe writes
EVENTS: dict[int, int] = {}                  # id(mirror) -> events received
SEEN: dict[str, list[float]] = {}            # endpoint key -> when each mirror first had it


def _instrument() -> None:
    apply = Mirror._apply

    def counted(self: Mirror, batch: list) -> None:
        now = time.monotonic()
        EVENTS[id(self)] = EVENTS.get(id(self), 0) + len(batch)
        for e in batch:
            if e.type == "put" and e.key.startswith(keys.ENDPOINTS) and e.key not in self.items:
                SEEN.setdefault(e.key, []).append(now)
        apply(self, batch)
    Mirror._apply = counted


class _CachedHints:
    """`typing` as store/records.py sees it, with get_type_hints cached per class.

    Record.from_dict calls typing.get_type_hints(cls) on every decode (~0.4 ms, most of an
    agent's CPU per watch event); hundreds of agents sharing one CPU here would measure that
    instead of the store. Same result, computed once per record class (the suggested fix)."""

    def __init__(self) -> None:
        import functools
        import typing
        self._typing = typing
        self.get_type_hints = functools.cache(typing.get_type_hints)

    def __getattr__(self, name: str) -> object:
        return getattr(self._typing, name)


def _cache_record_hints() -> None:
    from overnet.store import records
    if getattr(records, "typing", None) is not None and not isinstance(records.typing,
                                                                        _CachedHints):
        records.typing = _CachedHints()


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


class Worker:
    def __init__(self, store_url: str, workdir: str) -> None:
        self.store_url = store_url
        self.workdir = workdir
        self.agents: dict[str, object] = {}
        self.dps: dict[str, object] = {}
        self.seq = 0

    async def _start_one(self, name: str, index: int) -> None:
        from overnet.agent.config import AgentConfig
        from overnet.agent.daemon import Agent
        from overnet.dataplane.fake import FakeDataplane
        from overnet.store.etcd import EtcdStore
        state = os.path.join(self.workdir, name)
        os.makedirs(state, exist_ok=True)
        # resync_every: a level-triggered re-check per agent every minute instead of 10 s,
        # so the simulation's CPU goes to what is measured (the event-driven path).
        cfg = AgentConfig(store=self.store_url, name=name, advertise=address(index),
                          socket=os.path.join(state, "overnet.sock"), state_dir=state,
                          default_network=None, resync_every=RESYNC, dns=False)
        dp = FakeDataplane(underlay=f"{address(index)}/10")
        # Generous timeouts: hundreds of agents share this process's one CPU, so a reply can
        # wait on the event loop; that is the simulation's limit, not the store's.
        store = EtcdStore(self.store_url.partition("://")[2], call_timeout=CALL_TIMEOUT,
                          connect_timeout=CALL_TIMEOUT)
        agent = Agent(cfg, store=store, dataplane=dp,
                      host_networks=lambda: [UNDERLAY])
        await agent.start()
        self.agents[name], self.dps[name] = agent, dp

    async def op_start(self, names: list[str], first: int, parallel: int = 50) -> dict:
        t = time.monotonic()
        sem = asyncio.Semaphore(parallel)

        async def one(i: int, name: str) -> None:
            async with sem:
                await self._start_one(name, first + i)
        await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))
        return {"seconds": time.monotonic() - t, "agents": len(self.agents), "rss_mb": rss_mb()}

    async def op_network(self, host: str, name: str) -> dict:
        agent = self.agents[host]
        net = await agent.networks.ensure(name, "overlay")
        return {"id": getattr(net, "id", None)}

    async def op_sync(self, networks: list[str], timeout: float = 120) -> dict:
        """Wait until every agent here knows `networks` (its mirror has them)."""
        t = time.monotonic()
        for agent in self.agents.values():
            for name in networks:
                while True:
                    try:
                        agent.networks.find(name)
                        break
                    except Exception:     # NotFound until the watch delivers
                        if time.monotonic() - t > timeout:
                            raise
                        await asyncio.sleep(0.05)
        return {"seconds": time.monotonic() - t}

    async def _attach(self, host: str, network: str) -> dict:
        from overnet.agent.endpoints import AttachRequest
        self.seq += 1
        cid = f"c{os.getpid()}x{self.seq}"
        netns = f"/run/bench-ctl/{cid}"
        dp = self.dps[host]
        await dp.create_netns(netns)
        t0 = time.monotonic()
        ep = await self.agents[host].endpoints.attach(
            AttachRequest(network=network, container_id=cid, netns=netns, runtime="cni"))
        t1 = time.monotonic()
        return {"cid": cid, "t0": t0, "t1": t1, "key": keys.endpoints(ep.network) + ep.ip}

    async def op_attach(self, host: str, network: str) -> dict:
        return await self._attach(host, network)

    async def op_fill_new(self, hosts: list[str], per_host: int, networks: list[str],
                          parallel: int = 4) -> dict:
        """`per_host` endpoints on each of `hosts`, on that host's network (`networks[i]`)."""
        t = time.monotonic()
        sem = asyncio.Semaphore(parallel)

        async def one(host: str, network: str) -> None:
            async with sem:
                await self._attach(host, network)
        await asyncio.gather(*(one(h, n) for h, n in zip(hosts, networks)
                               for _ in range(per_host)))
        return {"seconds": time.monotonic() - t, "rss_mb": rss_mb()}

    # --- plain watchers: etcd's fan-out without the agents' own work -------------------

    async def _watch(self, store, rev: int) -> None:
        async for batch in store.watch(keys.ROOT, rev):
            now = time.monotonic()
            EVENTS[id(store)] = EVENTS.get(id(store), 0) + len(batch)
            for e in batch:
                if e.key.startswith(FANOUT):
                    SEEN.setdefault(e.key, []).append(now)

    async def op_watchers(self, count: int, parallel: int = 50) -> dict:
        """`count` more watchers of the whole store, one connection each, as an agent's
        mirror would hold."""
        from overnet.store.etcd import EtcdStore
        if not hasattr(self, "watchers"):
            self.watchers, self.tasks = [], []
        sem = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with sem:
                st = EtcdStore(self.store_url.partition("://")[2], call_timeout=CALL_TIMEOUT,
                               connect_timeout=CALL_TIMEOUT)
                await st.connect()
                _, rev = await st.list(FANOUT)
                self.watchers.append(st)
                self.tasks.append(asyncio.create_task(self._watch(st, rev + 1)))
        t = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        return {"seconds": time.monotonic() - t, "watchers": len(self.watchers),
                "rss_mb": rss_mb()}

    async def op_put(self, key: str, size: int) -> dict:
        """One endpoint-sized write; when it started and the revision it made."""
        from overnet.store.etcd import EtcdStore
        if not hasattr(self, "writer"):
            self.writer = EtcdStore(self.store_url.partition("://")[2])
            await self.writer.connect()
        t0 = time.monotonic()
        rev = await self.writer.put(key, b"x" * size)
        return {"t0": t0, "t1": time.monotonic(), "revision": rev, "key": key}

    async def op_bulk(self, prefix: str, count: int, size: int, batch: int = 100) -> dict:
        """`count` endpoint-sized records under `prefix`, `batch` per transaction."""
        from overnet.store.base import Put
        from overnet.store.etcd import EtcdStore
        st = EtcdStore(self.store_url.partition("://")[2], call_timeout=CALL_TIMEOUT)
        await st.connect()
        t = time.monotonic()
        value = b"y" * size
        for lo in range(0, count, batch):
            await st.txn([], [Put(f"{prefix}{i}", value) for i in range(lo, min(count,
                                                                              lo + batch))])
        await st.close()
        return {"seconds": time.monotonic() - t}

    async def op_phase(self) -> dict:
        EVENTS.clear()
        SEEN.clear()
        gc.collect()
        return {"rss_mb": rss_mb()}

    async def op_report(self, wanted: list[str]) -> dict:
        return {"seen": {k: SEEN.get(k, []) for k in wanted},
                "events": sum(EVENTS.values()), "mirrors": len(self.agents),
                "rss_mb": rss_mb()}

    async def op_stop(self) -> dict:
        failed = 0
        for agent in self.agents.values():
            try:
                await agent.stop()
            except Exception:   # noqa: BLE001 - stopping many: count, go on
                failed += 1
        self.agents.clear()
        for task in getattr(self, "tasks", []):
            task.cancel()
        for st in getattr(self, "watchers", []):
            try:
                await st.close()
            except Exception:   # noqa: BLE001 - stopping many: count, go on
                failed += 1
        return {"failed": failed}


async def serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready {}", flush=True)
    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "quit":
            break
        try:
            out = await getattr(worker, f"op_{op}")(**cmd)
            print("ok " + json.dumps(out), flush=True)
        except Exception as e:   # noqa: BLE001 - reported to the coordinator, which decides
            print("error " + json.dumps(f"{type(e).__name__}: {e}"), flush=True)


def main() -> None:
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _instrument()
    if os.environ.get("BENCH_CTL_UNCACHED") != "1":
        _cache_record_hints()
    store_url = sys.argv[1]
    workdir = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="bn-ctl-")
    asyncio.run(serve(Worker(store_url, workdir)))


if __name__ == "__main__":
    main()
