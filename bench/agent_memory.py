"""Where one agent's memory goes: a 1-host lab (real agent, real etcd, real kernel) fed local
containers through its API and remote endpoints written straight into etcd for ~50 made-up
hosts, with the agent's RSS, PSS and anonymous memory after every step.

    python -m bench.agent_memory [--locals 20] [--remotes 980] [--hosts 49] [--steps 7]
                                 [--pace S] [--stall S] [--trace] [--lab NAME] [--underlay CIDR]

--trace runs the agent under tracemalloc and prints, per step, the allocation sites that grew
most (tracemalloc itself costs memory: read RSS from a run without it). The feeder that writes
the remote records runs inside the lab's store namespace (the underlay has no address on this
machine); it keeps the made-up hosts alive with a lease. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time

FEEDER = "feed"
# The agent under tracemalloc: SIGUSR1 writes a snapshot to $OVERNET_MEM_SNAPSHOT.
TRACE_HOOK = """\
import os, signal, sys, tracemalloc, runpy
def _dump(*_):
    tracemalloc.take_snapshot().dump(os.environ["OVERNET_MEM_SNAPSHOT"] + ".tmp")
    os.rename(os.environ["OVERNET_MEM_SNAPSHOT"] + ".tmp", os.environ["OVERNET_MEM_SNAPSHOT"])
signal.signal(signal.SIGUSR1, _dump)
sys.argv[0] = "overnet"
runpy.run_module("overnet", run_name="__main__")
"""


# --- the feeder (inside the store's namespace) -----------------------------------------------

async def feed(store_url: str, net_name: str, hosts: int, subnet_base: str) -> None:
    """Commands on stdin: 'remotes N PACE' (bring the remote endpoints to N, spread over the
    hosts, PACE seconds apart), 'quit'. Answers 'ok N' or 'error MSG'."""
    from overnet.ipam.allocator import HostAllocator
    from overnet.ipam.pools import mac_for
    from overnet.store import keys, open_store
    from overnet.store.base import Absent, Put
    from overnet.store.records import (EndpointRecord, HostRecord, NameClaim, NetworkRecord,
                                       ServiceRecord)
    store = open_store(store_url)
    await store.connect()
    claim = await store.get(keys.name(net_name))
    net_id = NameClaim.from_json(claim.value).id
    net = NetworkRecord.from_json((await store.get(keys.network(net_id))).value)
    lease = await store.grant(30)
    base = [int(x) for x in subnet_base.split(".")]
    names = [f"fake{i:02d}" for i in range(hosts)]
    addrs = {}
    for i, name in enumerate(names):
        addrs[name] = ".".join(map(str, base[:3] + [100 + i]))
        rec = HostRecord(name=name, address=addrs[name], started=time.time()).to_json()
        await store.put(keys.host(name), rec)
        await store.put(keys.alive(name), rec, lease=lease.id)
        member = HostRecord(name=name, address=addrs[name]).to_json()   # agent/membership.py
        await store.put(keys.member(net.id, name), member)
        await store.put(keys.presence(net.id, name), member, lease=lease.id)
    allocators = {n: HostAllocator(store, n) for n in names}
    used: set = set()
    made = 0

    async def renew() -> None:
        while True:
            await asyncio.sleep(5)
            await store.refresh(lease)

    renewer = asyncio.create_task(renew())
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            break
        target, pace = int(line[1]), float(line[2])
        while made < target:
            await asyncio.sleep(pace)
            host = names[made % hosts]
            ip = await allocators[host].allocate(net, used)
            used.add(ip)
            ep_id, cid = os.urandom(32).hex(), os.urandom(32).hex()
            name = f"r{made}{host}"
            ep = EndpointRecord(id=ep_id, network=net.id, container=cid, name=name, host=host,
                                host_address=addrs[host], ip=str(ip), mac=mac_for(ip),
                                runtime="overnet", ifname="eth0")
            svc = ServiceRecord(id=os.urandom(32).hex(), name=name, network=net.id,
                                network_name=net.name, container=cid, endpoint=ep_id,
                                host=host)
            ekey, skey = keys.endpoint(net.id, str(ip)), keys.service(net.id, name)
            await store.txn([Absent(ekey), Absent(skey)],
                            [Put(ekey, ep.to_json()), Put(skey, svc.to_json())])
            made += 1
        print(f"ok {made}", flush=True)
    renewer.cancel()
    await store.revoke(lease)
    await store.close()


# --- the measuring side ------------------------------------------------------------------------

def memory(pid: int) -> dict[str, float]:
    """MB: RSS, PSS, anonymous, file-backed; and the thread count."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Anonymous:"):
                out[parts[0][:-1].lower()] = int(parts[1]) / 1024
    out["file"] = out["rss"] - out["anonymous"]
    out["threads"] = len(os.listdir(f"/proc/{pid}/task"))
    return out


def hosts_complete(pids: dict[str, int], names: set[str]) -> bool:
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/root/etc/hosts") as f:
                words = set(f.read().split())
        except OSError:
            return False
        if not (names - {name}) <= words:
            return False
    return True


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        from overnet.sandbox.lab import Lab
        self.args = args
        self.lab = Lab(args.lab, say=lambda s: None)
        self.snap = os.path.join(tempfile.mkdtemp(prefix="overnet-mem-"), "snapshot")
        self.prev = None
        self.base = self.last = None
        self.rows: list[dict] = []

    def up(self) -> None:
        self.lab.up(hosts=1, underlay=self.args.underlay)
        self.host = self.lab.state.hosts[0]
        if self.args.trace:
            self._relaunch_traced()
        time.sleep(2)

    def _relaunch_traced(self) -> None:
        from overnet.sandbox import procs
        from overnet.sandbox.lab import DEFAULT_NETWORK
        h, st = self.host, self.lab.state
        procs.kill(h.agent_pid)
        os.environ["OVERNET_MEM_SNAPSHOT"] = self.snap
        argv = [sys.executable, "-X", f"tracemalloc={self.args.frames}", "-c", TRACE_HOOK,
                "agent", "--store", st.store_url, "--name", h.name, "--advertise", h.address,
                "--default-network", f"overlay:{DEFAULT_NETWORK}", *st.agent_args]
        h.agent_pid = self.lab.launch(h, "agent.log", argv).pid
        self.lab._save()
        self.lab._wait_agent(h)

    def measure(self, label: str, remotes: int, locals_: int) -> None:
        time.sleep(self.args.settle)
        row = {"step": label, "remotes": remotes, "locals": locals_,
               **memory(self.host.agent_pid)}
        self.rows.append(row)
        print(f"{label:<22} remotes {remotes:5d} locals {locals_:3d}  RSS {row['rss']:6.1f}  "
              f"PSS {row['pss']:6.1f}  anon {row['anonymous']:6.1f}  file {row['file']:5.1f}"
              f"  threads {row['threads']:.0f}", flush=True)
        if self.args.trace:
            self._trace()

    def _trace(self) -> None:
        import tracemalloc
        if os.path.exists(self.snap):
            os.unlink(self.snap)
        os.kill(self.host.agent_pid, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.snap) and time.monotonic() < deadline:
            time.sleep(0.2)
        snap = tracemalloc.Snapshot.load(self.snap).filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        total = sum(s.size for s in snap.statistics("filename")) / 1024
        print(f"    traced: {total:.0f} KiB")
        key = "traceback" if self.args.frames > 1 else "lineno"
        stats = snap.compare_to(self.prev, key) if self.prev else snap.statistics(key)
        for s in stats[:self.args.top]:
            diff = getattr(s, "size_diff", s.size)
            frames = list(s.traceback)[-self.args.frames:]
            where = " <- ".join(f"{_short(fr.filename)}:{fr.lineno}" for fr in frames[::-1])
            print(f"    {diff / 1024:+9.1f} KiB {getattr(s, 'count_diff', s.count):+7d}  {where}")
        self.prev = snap
        if self.base is None and len(self.rows) == 2:
            self.base = snap
        self.last = snap

    def growth(self) -> None:
        """Sites that grew from the step after the local containers to the last step."""
        if self.base is None or self.last is None:
            return
        print("growth from the local containers' step to the last, by site:")
        for s in self.last.compare_to(self.base, "lineno")[:self.args.top]:
            print(f"    {s.size_diff / 1024:+9.1f} KiB {s.count_diff:+7d}  "
                  f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}")
        print("by file:")
        for s in self.last.compare_to(self.base, "filename")[:self.args.top]:
            print(f"    {s.size_diff / 1024:+9.1f} KiB {s.count_diff:+7d}  "
                  f"{_short(s.traceback[0].filename)}")

    def stall(self, seconds: float) -> None:
        pid = self.lab.state.stores[0].etcd_pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def local_containers(self, count: int) -> dict[str, int]:
        api = self.lab.client(self.host.name)
        pids = {}
        for i in range(count):
            c = api.post("/containers", {"net": "multihost", "name": f"loc{i}", "detach": True,
                                         "cmd": ["sleep", "infinity"]})
            pids[f"loc{i}"] = c["State"]["Pid"]
        return pids

    def feeder(self):
        from .labs import LineProcess
        st = self.lab.state
        store = self.lab.host("store")
        base = self.args.underlay.split("/")[0]
        argv = [*store.enter_argv(), sys.executable, "-m", "bench.agent_memory", FEEDER,
                st.store_url, "multihost", str(self.args.hosts), base]
        env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
        proc = LineProcess(argv, env=env)
        proc.expect("ready", 60)
        return proc

    def wait_names(self, pids: dict[str, int], names: set[str]) -> float:
        t0 = time.monotonic()
        while not hosts_complete(pids, names):
            if time.monotonic() - t0 > 120:
                print("    hosts files still incomplete after 120 s")
                break
            time.sleep(0.1)
        return time.monotonic() - t0

    def main(self) -> None:
        a = self.args
        self.measure("agent up", 0, 0)
        pids = self.local_containers(a.locals)
        names = set(pids)
        self.wait_names(pids, names)
        self.measure("local containers", 0, a.locals)
        feeder = self.feeder()
        try:
            for step in range(1, a.steps + 1):
                n = a.remotes * step // a.steps
                feeder.send(f"remotes {n} {a.pace}")
                feeder.expect("ok", 300 + a.remotes * a.pace)
                names |= {f"r{i}fake{i % a.hosts:02d}" for i in range(n)}
                took = self.wait_names(pids, names)
                self.measure(f"remotes ({took:.1f}s)", n, a.locals)
            if a.linger:     # a resync or two (every 10 s) re-reads the kernel's peers
                self.args.settle = a.linger
                self.measure("lingered", a.remotes, a.locals)
            if a.stall:      # an overloaded etcd: calls time out, the agent re-connects
                self.stall(a.stall)
                self.measure("after an etcd stall", a.remotes, a.locals)
        finally:
            feeder.close()
        self._slopes()
        self.growth()

    def _slopes(self) -> None:
        r = self.rows
        if len(r) >= 3 and self.args.locals:
            per_local = (r[1]["rss"] - r[0]["rss"]) * 1024 / self.args.locals
            print(f"per local container: {per_local:.1f} KB RSS")
        if len(r) >= 4 and self.args.remotes:
            span = r[-1]["remotes"] - r[1]["remotes"]
            for k in ("rss", "pss", "anonymous"):
                print(f"per remote endpoint ({k}): "
                      f"{(r[-1][k] - r[1][k]) * 1024 / span:.1f} KB (from the local "
                      f"containers' step to the last)")
        print(json.dumps(self.rows))

    def down(self) -> None:
        self.lab.down(quiet=True)


def _short(path: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.agent_memory")
    p.add_argument("--locals", type=int, default=20)
    p.add_argument("--remotes", type=int, default=980)
    p.add_argument("--hosts", type=int, default=49)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--pace", type=float, default=0.0,
                   help="seconds between two remote endpoints (the scale bench: ~0.2)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before each sample")
    p.add_argument("--linger", type=float, default=25.0,
                   help="seconds before a last sample at the largest size")
    p.add_argument("--stall", type=float, default=0.0,
                   help="then stop etcd this many seconds (calls time out after 3 s)")
    p.add_argument("--trace", action="store_true")
    p.add_argument("--frames", type=int, default=1, help="tracemalloc frames per site")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--lab", default="memlab")
    p.add_argument("--underlay", default="192.168.213.0/24")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == [FEEDER]:
        store_url, net, hosts, base = argv[1:5]
        asyncio.run(feed(store_url, net, int(hosts), base))
        return 0
    run = Run(parse(argv))
    try:
        run.up()
        run.main()
    finally:
        run.down()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
