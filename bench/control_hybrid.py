"""The simulated control plane at a size whose agents do not fit on this machine: one
network's hosts run real agents, every other host is a plain watcher of its own network's
endpoints (one etcd client each: what a start elsewhere costs etcd for that host's agent,
whose mirror watches only its networks' records besides the cluster-wide ones) with the
records its agent would have written (host, liveness, address block, endpoints). etcd
carries the whole cluster; the agents measured are the subscribed hosts of every start."""

from __future__ import annotations

from overnet.store import keys

from . import control_stats as cs
from .control_procs import host_name

BENCH = "control"


def _start(sim, hosts: list[int], parallel: int) -> list[dict]:
    part = [(i, host_name(i)) for i in hosts]
    return sim.workers.ask_all(3600, sim._per_worker(
        "start", part, lambda p: {"hosts": [[n, i] for i, n in p], "parallel": parallel}))


def _records(sim, hosts: list[int], per_host: int) -> int:
    items = [(i, host_name(i), sim.net(i)) for i in hosts]
    out = sim.workers.ask_all(3600, sim._per_worker(
        "records", items, lambda p: {"items": [[h, i, n] for i, h, n in p],
                                     "per_host": per_host, "size": sim.size}))
    return max([o["revision"] for o in out if o] or [0])


def _catch_up(sim) -> None:
    rev = sim.workers.ask(0, 600, op="put", key=keys.ROOT + "bench-mark", size=1)
    sim.workers.ask_all(3600, [{"op": "catch_up", "revision": rev["revision"]}] * sim.nworkers)


def build(ctx, sim, hosts: int, per_host: int) -> dict:
    """The cluster of `hosts` hosts, agents on the first network's; returns what it cost."""
    say = lambda m: ctx.progress(BENCH, "  " + m)
    w, size = sim.nworkers, sim.size
    agents = list(range(min(size, hosts)))
    _start(sim, agents[:w], 1)               # one agent per worker reads the networks
    ids = {name: sim.workers.ask(0, 600, op="network", host=host_name(0), name=name)["id"]
           for name in cs.networks(hosts, size)}
    pairs = [(i, host_name(i), n) for i in agents[:w] for n in cs.networks(hosts, size)]
    sim.workers.ask_all(900, sim._per_worker("sync", pairs,
                                             lambda p: {"pairs": [[h, n] for _, h, n in p]}))
    light = [(i, host_name(i)) for i in range(len(agents), hosts)]
    sim.workers.ask_all(3600, sim._per_worker("hosts", light,
                                              lambda p: {"items": [[n, i] for i, n in p]}))
    say(f"{len(light)} hosts without an agent registered")
    _records(sim, agents[1:], per_host - 1)
    _records(sim, [i for i, _ in light], per_host)
    say(f"{(hosts - 1) * per_host:,} endpoint records written")
    before = sum(o["rss_mb"] for o in sim.workers.ask_all(300, [{"op": "phase"}] * w))
    _start(sim, agents[w:], 4)               # each lists the hosts and networks
    _catch_up(sim)
    after = sum(o["rss_mb"] for o in sim.workers.ask_all(300, [{"op": "phase"}] * w))
    say(f"{len(agents)} agents up ({(after - before) / max(1, len(agents) - w):.0f} MB each)")
    sim.workers.ask_all(3600, sim._per_worker(
        "fill", [(i, host_name(i), sim.net(i)) for i in agents],
        lambda p: {"hosts": [h for _, h, _ in p], "networks": [n for _, _, n in p]}))
    _catch_up(sim)
    sim.workers.ask_all(3600, [{"op": "watchers", "prefixes": [
        keys.endpoints(ids[sim.net(i)]) for i, _ in part]} if part else None
        for part in cs.by_worker(light, w)])
    say(f"{len(light)} watchers of their network's endpoints up")
    sim.hosts = hosts
    return {"agents": len(agents), "agent_mb": (after - before) / max(1, len(agents) - w),
            "hybrid": True}
