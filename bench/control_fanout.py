"""etcd alone: what one write costs etcd when thousands of hosts watch, and what scoping
each host's watch to its networks would save.

The agents stop; `bulk` endpoint-sized records are loaded (the database of a 100,000-endpoint
cluster, spread over networks of `ctl_net_size` hosts); then plain watchers (one etcd client
each, as every agent's mirror holds) grow in steps, in two modes:

  - whole:  every watcher watches the whole store (what every agent's mirror does today);
  - scoped: each watcher watches only its network's endpoints (what an agent that watched
            the networks it has endpoints on would hold for endpoint changes).

At each step `writes` single-key writes to random networks are timed to the last watcher that
must see them (every watcher, or its network's), with etcd's CPU per write net of its idle load.
"""

from __future__ import annotations

import os
import random
import time

from overnet.store import keys

from . import control_stats as cs
from . import stats
from .control_procs import etcd_counts
from .labs import Context

BENCH = "control"
PROBE = "probe-"       # bench/control_worker.py times keys whose last segment starts so


def fanout(ctx: Context, sim, targets: tuple, writes: int, out: list[dict],
           bulk: int = 100_000, size: int = 350) -> list[dict]:
    """Appends one dict per (mode, watchers) step to `out` and returns it."""
    w = sim.nworkers
    sim.workers.ask_all(600, [{"op": "stop"}] * w)
    nets = max(1, max(targets) // sim.size)
    prefixes = [keys.endpoints(f"fnet{k}") for k in range(nets)]
    before = etcd_counts(sim.etcd.metrics())["db_bytes"]
    t = time.monotonic()
    sim.workers.ask(0, 1800, op="bulk", prefixes=prefixes, count=bulk, size=size)
    load = {"bulk": bulk, "bulk_load_s": time.monotonic() - t,
            "db_mb_before_bulk": before / 2**20}
    for mode in ("whole", "scoped"):
        have = 0
        for target in targets:
            if time.monotonic() - ctx.t0 > ctx.cfg.ctl_budget_s * 1.5:
                out.append({"mode": mode, "watchers": target, "stopped": "time budget"})
                break
            ctx.progress(BENCH, f"etcd alone: {target} watchers, {mode}")
            new = [(i, keys.ROOT if mode == "whole" else prefixes[i // sim.size])
                   for i in range(have, target)]
            sim.workers.ask_all(1800, [{"op": "watchers", "prefixes": [p for _, p in part]}
                                       if part else None for part in cs.by_worker(new, w)])
            have = target
            s = _measure(sim, mode, target, writes, prefixes, size)
            s.update(load)
            out.append(s)
            ctx.progress(BENCH, fan_line(s))
        sim.workers.ask_all(600, [{"op": "unwatch"}] * w)
    return out


def _measure(sim, mode: str, target: int, writes: int, prefixes: list[str], size: int,
             idle_s: float = 5.0, settle: float = 60.0) -> dict:
    w = sim.nworkers
    sim.workers.ask_all(120, [{"op": "phase"}] * w)
    cpu0, t = sim.etcd.cpu_seconds(), time.monotonic()
    time.sleep(idle_s)
    idle = (sim.etcd.cpu_seconds() - cpu0) / (time.monotonic() - t)
    rng = random.Random(target)
    live = max(1, min(len(prefixes), -(-target // sim.size)))   # networks with watchers
    m0, cpu0, t = sim.etcd.metrics(), sim.etcd.cpu_seconds(), time.monotonic()
    done, need = [], {}
    for j in range(writes):
        k = rng.randrange(live)
        key = f"{prefixes[k]}{PROBE}{mode}{target}-{j}"
        done.append(sim.workers.ask(0, 120, op="put", key=key, size=size))
        need[key] = target if mode == "whole" else len(cs.members(k, target, sim.size))
    m1, cpu1, seconds = sim.etcd.metrics(), sim.etcd.cpu_seconds(), time.monotonic() - t
    wanted = [d["key"] for d in done]
    deadline = time.monotonic() + settle
    while True:
        reps = sim.workers.ask_all(300, [{"op": "report", "wanted": wanted}] * w)
        seen = cs.merge_seen(reps, wanted)
        if all(len(seen[k]["all"]) >= need[k] for k in wanted) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    last, _ = cs.last_of(done, seen, "all", lambda v: 0)
    missing = sum(max(0, need[k] - len(seen[k]["all"])) for k in wanted)
    return {"mode": mode, "watchers": target, "writes": len(done), "last_ms": last,
            "missing": missing, "watchers_per_write": sum(need.values()) / len(need),
            "events_per_watcher_per_write": sum(r["events"] for r in reps) / target / len(done),
            "worker_rss_mb": sum(r["rss_mb"] for r in reps), "loadavg": os.getloadavg()[0],
            **cs.per_start(etcd_counts(m0), etcd_counts(m1), len(done), cpu1 - cpu0, idle,
                           seconds)}


def fan_line(s: dict) -> str:
    last = stats.summarize(s["last_ms"])
    return (f"{s['watchers']} watchers ({s['mode']}): write to the last one that must see it "
            f"p50 {last['median'] or 0:.0f} ms p99 {last['p99'] or 0:.0f} ms, etcd "
            f"{s['etcd_cpu_ms_per_start']:.2f} ms CPU/write, "
            f"{s['events_per_watcher_per_write']:.3f} events/watcher/write, DB "
            f"{s['db_mb']:.0f} MB, {s['missing']} missed")
