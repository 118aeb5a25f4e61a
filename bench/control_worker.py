"""A worker of the simulated control plane: many overnet agents in one process.

Each agent is the real `overnet.agent.daemon.Agent` (its own liveness lease, mirror of the
store, watch stream and reconciler) over a FakeDataplane (no kernel state). The coordinator
(bench/control.py) drives the workers with one JSON command per line on stdin; each answer
is one line `ok {json}` or `error "message"` on stdout.

What is instrumented (times in CLOCK_MONOTONIC, which every process of the machine shares, so
the coordinator can compare them with the moment an attach started):
  - every mirror (Mirror._apply wrapped) counts the watch events it receives and notes when it
    first had each endpoint key;
  - every reconcile pass of a network (Agent._reconcile wrapped) notes when it began and
    ended, so "the peer is programmed" = the end of the first pass begun after the mirror had it;
  - the event loop's lag (a 50 ms timer's overshoot): how far behind this process runs.

Levers of the simulation, each said in the results (none changes what etcd sees per host):
  - CHANNEL=worker: the agents of one worker share one etcd client (one gRPC channel); each
    still has its own lease and its own watch stream on it;
  - records decoded once per worker (view.decode cached on the value's bytes): a real host
    decodes each record once too, this only avoids doing it once per simulated host;
  - liveness leases of HOST_TTL (see there);
  - garbage collection every HOUSEKEEPING s instead of 5 s, and no background sweep of
    stray records (each pass reads every endpoint record: the coordinator times one pass of
    each on one agent instead); of each host's background endpoints, one is attached by its
    agent (op_fill: the host then programs its network's peers), the others are written in
    transactions of 100 as their host's agent would write them (op_records; the sweep would
    take them for strays).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import os
import random
import sys
import tempfile
import time

from overnet.store import keys
from overnet.store.mirror import Mirror

from .control_light import CALL_TIMEOUT, EVENTS, SEEN, LightHosts, address, rss_mb

UNDERLAY = ipaddress.IPv4Network("100.64.0.0/10")
RESYNC = 60.0
HOUSEKEEPING = 600.0
# Liveness leases of 2 minutes, not 10 s: when the simulation falls behind (a join storm:
# every host receives every other's registration), 10 s leases expired, every agent granted
# a new one and re-registered, two more changes for every host: a storm feeding itself that
# hosts with a CPU of their own do not have. Refreshes come every 40 s instead of 3.3 s.
HOST_TTL = 120
PASSES: dict[tuple[int, str], list[tuple[float, float]]] = {}  # (id(agent), net) -> passes
LAGS: list[float] = []                       # event loop lag samples, seconds


def _instrument() -> None:
    from overnet.agent.daemon import Agent
    apply, reconcile = Mirror._apply, Agent._reconcile

    def counted(self: Mirror, batch: list) -> None:
        now = time.monotonic()
        owner = id(_owner(self))
        EVENTS[owner] = EVENTS.get(owner, 0) + len(batch)
        for e in batch:
            if e.type == "put" and e.key.startswith(keys.ENDPOINTS) and e.key not in self.items:
                SEEN.setdefault(e.key, {})[owner] = now
        apply(self, batch)

    async def timed(self: Agent, net, verify: bool) -> None:
        began = time.monotonic()
        await reconcile(self, net, verify)
        PASSES.setdefault((id(self), net.id), []).append((began, time.monotonic()))
    Mirror._apply = counted
    Agent._reconcile = timed


def _owner(mirror: Mirror) -> object:
    """The agent's scoped mirror a part belongs to (it listens to its parts' changes)."""
    return next((fn.__self__ for fn in mirror.listeners if hasattr(fn, "__self__")), mirror)


def _share_decoding() -> None:
    """view.decode cached per worker on (record class, value bytes): every simulated host
    parses the same bytes into the same record; records are never modified once read."""
    from overnet.agent import view
    plain = view.decode
    cache: dict[tuple[type, bytes], object] = {}

    def decode(cls, key, raw):
        got = cache.get((cls, raw))
        if got is None:
            if len(cache) > 500_000:
                cache.clear()
            got = cache[(cls, raw)] = plain(cls, key, raw)
        return got
    view.decode = decode


class SharedStore:
    """One etcd client for every agent of the worker; close() leaves it to the others."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def close(self) -> None:
        pass


def first_after(passes: list[tuple[float, float]], t: float) -> float | None:
    """The end of the first reconcile pass that began at or after `t`."""
    ends = [end for began, end in passes if began >= t]
    return min(ends) if ends else None


def _agent_class():
    from overnet.agent.daemon import Agent
    from overnet.store.base import StoreError

    class SimAgent(Agent):
        """The real agent, its housekeeping loops run every HOUSEKEEPING s (see the doc)."""

        async def _gc_loop(self) -> None:
            await asyncio.sleep(random.uniform(0, HOUSEKEEPING))     # not all at once
            while True:
                await asyncio.sleep(HOUSEKEEPING)
                try:
                    await self.gc.collect()
                except StoreError:
                    pass

        async def _owed_loop(self) -> None:
            while True:
                await asyncio.sleep(HOUSEKEEPING)
                try:     # no sweep: the background records have no local endpoint
                    await self.endpoints.settle_owed()
                except StoreError:
                    pass
    return SimAgent


class Worker(LightHosts):
    def __init__(self, store_url: str, workdir: str, channel: str) -> None:
        self.endpoint = store_url.partition("://")[2]
        self.store_url = store_url
        self.workdir = workdir
        self.channel = channel
        self.agents: dict[str, object] = {}
        self.dps: dict[str, object] = {}
        self.shared = None
        self.seq = 0
        self.watchers: list = []
        self.tasks: list[asyncio.Task] = [asyncio.create_task(self._lag())]

    async def _lag(self, every: float = 0.05) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(every)
            LAGS.append(time.monotonic() - t - every)
            del LAGS[:-20000]

    def _store(self):
        from overnet.store.etcd import EtcdStore
        # Generous timeouts: hundreds of agents share this process's one CPU, so a reply can
        # wait on the event loop; that is the simulation's limit, not the store's.
        if self.channel != "worker":
            return EtcdStore(self.endpoint, call_timeout=CALL_TIMEOUT,
                             connect_timeout=CALL_TIMEOUT)
        if self.shared is None:
            self.shared = EtcdStore(self.endpoint, call_timeout=CALL_TIMEOUT,
                                    connect_timeout=CALL_TIMEOUT)
        return SharedStore(self.shared)

    async def _start_one(self, name: str, index: int) -> None:
        from overnet.agent.config import AgentConfig
        from overnet.dataplane.fake import FakeDataplane
        state = os.path.join(self.workdir, name)
        os.makedirs(state, exist_ok=True)
        # resync_every: a level-triggered re-check per agent every minute instead of 10 s,
        # so the simulation's CPU goes to what is measured (the event-driven path).
        cfg = AgentConfig(store=self.store_url, name=name, advertise=address(index),
                          socket=os.path.join(state, "overnet.sock"), state_dir=state,
                          default_network=None, resync_every=RESYNC, dns=False,
                          host_ttl=HOST_TTL)
        dp = FakeDataplane(underlay=f"{address(index)}/10")
        agent = _agent_class()(cfg, store=self._store(), dataplane=dp,
                               host_networks=lambda: [UNDERLAY])
        await agent.start()
        self.agents[name], self.dps[name] = agent, dp

    async def op_start(self, hosts: list[list], parallel: int = 50) -> dict:
        """Start an agent per [name, index] in `hosts` (index: its underlay address)."""
        t = time.monotonic()
        sem = asyncio.Semaphore(parallel)

        async def one(name: str, index: int) -> None:
            async with sem:
                await self._start_one(name, index)
        await asyncio.gather(*(one(n, i) for n, i in hosts))
        return {"seconds": time.monotonic() - t, "agents": len(self.agents), "rss_mb": rss_mb()}

    async def op_network(self, host: str, name: str) -> dict:
        net = await self.agents[host].networks.ensure(name, "overlay")
        return {"id": getattr(net, "id", None)}

    async def op_sync(self, pairs: list[list[str]], timeout: float = 300) -> dict:
        """Wait until each [host, network] of `pairs`: that host's mirror has the network."""
        t = time.monotonic()
        for host, name in pairs:
            while True:
                try:
                    self.agents[host].networks.find(name)
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
        await self.dps[host].create_netns(netns)
        t0 = time.monotonic()
        ep = await self.agents[host].endpoints.attach(
            AttachRequest(network=network, container_id=cid, netns=netns, runtime="cni"))
        t1 = time.monotonic()
        return {"cid": cid, "t0": t0, "t1": t1, "key": keys.endpoints(ep.network) + ep.ip}

    async def op_attach(self, host: str, network: str) -> dict:
        return await self._attach(host, network)

    async def op_fill(self, hosts: list[str], networks: list[str], parallel: int = 16) -> dict:
        """One container attached on each of `hosts`, on `networks[i]`: a host with an
        endpoint of its own on a network programs that network's peers (a subscribed host)."""
        t = time.monotonic()
        sem = asyncio.Semaphore(parallel)

        async def one(host: str, network: str) -> None:
            async with sem:
                await self.op_attach(host, network)
        await asyncio.gather(*(one(h, n) for h, n in zip(hosts, networks)))
        return {"seconds": time.monotonic() - t, "rss_mb": rss_mb()}

    async def op_records(self, items: list[list], per_host: int, size: int,
                         batch: int = 100) -> dict:
        """Background endpoints written as their hosts' agents would write them, `batch` per
        transaction (a burst of starts): for each [host, index, network] of `items`, the
        host's records on the network, its address block (one of the pool's last, by the
        host's place in its network) and `per_host` endpoints in it. The agent then
        allocates from that block."""
        from overnet.ipam.pools import block_at, block_count, mac_for, usable
        from overnet.store.base import Put
        from overnet.store.records import BlockRecord, EndpointRecord, HostRecord
        puts = []
        for name, index, network in items:
            if per_host < 1:
                break
            reader = self.agents.get(name) or next(iter(self.agents.values()))
            net = reader.networks.find(network)
            pool = net.network
            block = block_at(pool, block_count(pool) - 1 - index % size)
            puts.append(Put(keys.block(net.id, block), BlockRecord(host=name).to_json()))
            # the host on its network (agent/membership.py), its presence under no lease
            member = HostRecord(name=name, address=address(index), mtu=1500).to_json()
            puts += [Put(keys.member(net.id, name), member),
                     Put(keys.presence(net.id, name), member)]
            for slot, ip in zip(range(per_host), usable(pool, block,
                                                        ipaddress.IPv4Address(net.gateway))):
                eid = f"b{index}s{slot}x{net.id[:8]}"
                rec = EndpointRecord(id=eid, network=net.id, container=eid, name="",
                                     host=name, host_address=address(index), ip=str(ip),
                                     mac=mac_for(ip), runtime="cni")
                puts.append(Put(keys.endpoint(net.id, str(ip)), rec.to_json()))
        writer = await self._writer()
        t, rev = time.monotonic(), 0
        for lo in range(0, len(puts), batch):
            rev = (await writer.txn([], puts[lo:lo + batch])).revision
        return {"seconds": time.monotonic() - t, "records": len(puts), "revision": rev}

    async def op_catch_up(self, revision: int, timeout: float = 1800) -> dict:
        """Wait until every agent's mirror has what the store held at `revision` under each
        prefix in its scope (the latest change under a prefix, listed once per worker)."""
        t = time.monotonic()
        writer = await self._writer()
        latest: dict[str, int] = {}
        for agent in self.agents.values():
            for m in agent.mirror.mirrors():
                if m.prefix not in latest:
                    kvs, _ = await writer.list(m.prefix)
                    latest[m.prefix] = max([kv.mod_revision for kv in kvs
                                            if kv.mod_revision <= revision], default=0)
                await m.wait_revision(latest[m.prefix], timeout=timeout)
        return {"seconds": time.monotonic() - t, "rss_mb": rss_mb()}

    async def _writer(self):
        from overnet.store.etcd import EtcdStore
        if not hasattr(self, "writer"):
            self.writer = EtcdStore(self.endpoint, call_timeout=CALL_TIMEOUT,
                                    connect_timeout=CALL_TIMEOUT)
            await self.writer.connect()
        return self.writer

    async def op_housekeeping(self, host: str) -> dict:
        """One garbage-collection pass and one sweep on `host`, timed (each reads every
        endpoint record of the store: a real agent does both every 5 s)."""
        agent = self.agents[host]
        t = time.process_time()
        await agent.gc.collect()
        gc_s = time.process_time() - t
        await agent.endpoints.sweep()
        return {"gc_ms": gc_s * 1e3, "sweep_ms": (time.process_time() - t - gc_s) * 1e3}

    async def op_phase(self) -> dict:
        EVENTS.clear()
        SEEN.clear()
        PASSES.clear()
        LAGS.clear()
        gc.collect()
        return {"rss_mb": rss_mb()}

    async def op_cpu(self) -> dict:
        return {"cpu": time.process_time(), "t": time.monotonic()}

    async def op_report(self, wanted: list[str]) -> dict:
        """Per wanted key: when each mirror had it; for the hosts with endpoints on its
        network (the ones that must program it), when they had it and programmed it."""
        mirrors = {id(a.mirror): a for a in self.agents.values() if a.mirror is not None}
        out = {}
        for key in wanted:
            seen = SEEN.get(key, {})
            net_id = keys.split(key)[1] if key.startswith(keys.ENDPOINTS) else ""
            sub = [a for a in self.agents.values() if a.endpoints.on_network(net_id)]
            had = [seen[id(a.mirror)] for a in sub if id(a.mirror) in seen]
            done = [first_after(PASSES.get((id(a), net_id), []), seen[id(a.mirror)])
                    for a in sub if id(a.mirror) in seen]
            out[key] = {"all": list(seen.values()), "sub": had, "nsub": len(sub),
                        "prog": [t for t in done if t is not None]}
        lags = sorted(LAGS)
        return {"seen": out, "events": sum(EVENTS.values()),
                "mirrors": len(mirrors) or len(self.watchers), "rss_mb": rss_mb(),
                "lag_max_ms": 1e3 * lags[-1] if lags else 0.0,
                "lag_p99_ms": 1e3 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0}

    async def op_stop(self) -> dict:
        failed = 0
        for agent in self.agents.values():
            try:
                await agent.stop()
            except Exception:   # noqa: BLE001 - stopping many: count, go on
                failed += 1
        self.agents.clear()
        self.dps.clear()
        if self.shared is not None:
            await self.shared.close()
            self.shared = None
        await self.op_unwatch()
        return {"failed": failed}


async def serve(store_url: str, workdir: str, channel: str) -> None:
    worker = Worker(store_url, workdir, channel)
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
    if os.environ.get("BENCH_CTL_SHARED_DECODE", "1") == "1":
        _share_decoding()
    store_url = sys.argv[1]
    workdir = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="bn-ctl-")
    channel = sys.argv[3] if len(sys.argv) > 3 else "agent"
    asyncio.run(serve(store_url, workdir, channel))


if __name__ == "__main__":
    main()
