"""5. Simulated control plane: how many hosts one etcd carries.

Real agents (overnet.agent.daemon.Agent: liveness lease, mirror of the store scoped to its
networks, watches, reconciler) over FakeDataplane, a few worker processes holding hundreds or thousands of them
each (bench/control_worker.py), against one real etcd this benchmark starts on loopback. The
hosts are in networks of `ctl_net_size` (bench/control_stats.py): a start concerns the hosts
of its network (the *subscribed* hosts, which must program the new peer, and the only ones
whose mirror holds that network's records and receives its changes). The host count grows in steps
(default 100, 1,000, 5,000); at each step every new host gets `ctl_per_host` endpoints, then
S containers are started one after another on random hosts and measured:

  - etcd keys written and write requests per start;
  - watch events received per host per start (every mirror counts what it receives);
  - from the start of an attach until every subscribed host's mirror has the new endpoint,
    until every subscribed host has programmed it (its network's reconcile pass ran with
    it), and until every mirror that receives it has it (p50 and p99 over the starts);
  - etcd's CPU per start (net of its idle load: leases, pings), its database size; the
    workers' memory per agent and event-loop lag (how far the simulation runs behind);
  - one garbage-collection pass and one sweep on one agent (each reads every endpoint record).

Then etcd alone (bench/control_fanout.py): plain watchers up to 5,000 and 100,000 endpoint
records, watching the whole store (what every agent does today) or only their network's
endpoints (what a scoped agent would), the cost per write of each.

The run stops growing where the machine cannot go on (memory, start-up failures, the time
budget) and says why. Output: bench/results/control.{json,md} and control-scale.png.
"""

from __future__ import annotations

import os
import random
import shutil
import time

from overnet.store import keys

from . import control_stats as cs
from .control_fanout import fanout
from .control_plot import draw_curves, record, step_line
from .control_procs import Etcd, Workers, etcd_counts, host_name, mem_available_mb
from .control_worker import HOST_TTL
from .labs import HERE, Context
from .report import Results

BENCH = "control"
CYCLE_S = HOST_TTL / 3      # the simulated agents refresh their leases this often
IDLE_PARTS = 8              # etcd's idle rate: taken in parts, for how far off it may be
CHUNK = 200         # hosts started per round, per worker at most 50 at once


class Sim:
    """One growing simulated cluster: etcd, workers, and the hosts started so far."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        cfg = ctx.cfg
        self.size = cfg.ctl_net_size
        self.channel = cfg.ctl_channel
        self.etcd = Etcd()
        ctx.closers.append(self.etcd.stop)
        self.nworkers = cfg.ctl_workers
        self.workers = Workers(self.nworkers, self.etcd.url, self.channel)
        ctx.closers.append(self.workers.close)
        self.hosts = 0
        self.step_limit = cfg.ctl_step_limit_s

    def close(self) -> None:
        """Kill the workers and etcd now (their agents need no goodbye)."""
        self.workers.kill()
        shutil.rmtree(self.workers.dir, ignore_errors=True)
        self.etcd.stop()

    def net(self, i: int) -> str:
        return cs.network_of(i, self.size)

    def _per_worker(self, op: str, items: list[tuple], make) -> list[dict | None]:
        parts = cs.by_worker(items, self.nworkers)
        return [{"op": op, **make(p)} if p else None for p in parts]

    def grow(self, target: int, per_host: int, bulk_last: bool = False) -> dict:
        """Start hosts up to `target`, make their networks, give each `per_host` endpoints."""
        new, w = list(range(self.hosts, target)), self.nworkers
        t, rss = time.monotonic(), 0.0
        for lo in range(0, len(new), CHUNK):
            part = [(i, host_name(i)) for i in new[lo:lo + CHUNK]]
            out = self.workers.ask_all(600, self._per_worker(
                "start", part, lambda p: {"hosts": [[n, i] for i, n in p]}))
            rss = sum(o["rss_mb"] for o in out if o)
            self.ctx.progress(BENCH, f"  {part[-1][0] + 1} hosts up ({time.monotonic() - t:.0f}"
                              f" s, workers {rss:.0f} MB)")
            if rss > self.ctx.cfg.ctl_mem_mb:
                raise MemoryError(f"the workers hold {rss:.0f} MB, over the run's limit")
        # every mirror is in step (a join reaches no other host: a host's records reach the
        # hosts of its networks when its first endpoint there is attached, below)
        rev = self.workers.ask(0, 600, op="put", key=keys.ROOT + "bench-mark", size=1)
        self.workers.ask_all(self.step_limit, [{"op": "catch_up",
                                                "revision": rev["revision"]}] * w)
        join_s, join_rss = time.monotonic() - t, rss
        join_keys = etcd_counts(self.etcd.metrics())["keys"]
        self.ctx.progress(BENCH, f"  every host registered ({join_s:.0f} s)")
        for i in new:      # each network made once, by its first host, before any attach
            if i % self.size == 0:
                self.workers.ask(i % self.nworkers, 600, op="network", host=host_name(i),
                                 name=self.net(i))
        self.ctx.progress(BENCH, f"  networks made ({time.monotonic() - t:.0f} s)")
        pairs = [(i, host_name(i), self.net(i)) for i in new]
        self.workers.ask_all(600, self._per_worker(
            "sync", pairs, lambda p: {"pairs": [[h, n] for _, h, n in p]}))
        t = time.monotonic()
        # Each host's address block and all but one of its endpoints written in bulk (host 0
        # keeps only endpoints of its own making: its sweep is timed), and one container
        # attached on each host, so that every host programs its network's peers. First
        # the bulk (the agent then allocates from the block written for it), or, with
        # `bulk_last`, the attaches: each attach is a pass over its whole network on each of
        # the network's hosts, and 5,000 hosts' attaches into networks of 1,000 endpoints
        # each did not finish in 15 minutes on 2 CPUs.
        fills = [(i, host_name(i), self.net(i)) for i in new if i]
        attach = [(i, host_name(i), self.net(i)) for i in new]
        for phase in (("fill", "records") if bulk_last else ("records", "fill")):
            if phase == "records":
                out = self.workers.ask_all(self.step_limit, self._per_worker(
                    "records", fills, lambda p: {"items": [[h, i, n] for i, h, n in p],
                                                 "per_host": per_host - 1, "size": self.size}))
                rev = max([o["revision"] for o in out if o] or [0])
                self.ctx.progress(BENCH, f"  {len(fills) * (per_host - 1)} endpoint records "
                                  f"written ({time.monotonic() - t:.0f} s)")
                self.workers.ask_all(self.step_limit, [{"op": "catch_up", "revision": rev}] * w)
            else:
                self.workers.ask_all(self.step_limit, self._per_worker(
                    "fill", attach, lambda p: {"hosts": [h for _, h, _ in p],
                                               "networks": [n for _, _, n in p]}))
                self.ctx.progress(BENCH, f"  one container attached on each host "
                                  f"({time.monotonic() - t:.0f} s)")
        rev = self.workers.ask(0, 600, op="put", key=keys.ROOT + "bench-mark", size=1)
        self.workers.ask_all(self.step_limit, [{"op": "catch_up",
                                                "revision": rev["revision"]}] * w)
        time.sleep(2.0)       # the reconciles the last changes started
        self.hosts = target
        return {"join_s": join_s, "fill_s": time.monotonic() - t, "join_rss_mb": join_rss,
                "join_keys": join_keys}

    def sample(self, starts: int, idle_s: float = CYCLE_S, settle: float = 60.0,
               on: list[int] | None = None) -> dict:
        """`starts` attaches one after another on random hosts (of `on`, if given: the hosts
        with an agent), for one lease cycle at least, and what they cost. etcd's idle rate
        is taken over a whole cycle too: the agents' lease refreshes come in a burst (they
        started together), which a shorter window catches or misses by chance, and whose
        CPU was as large as that of all the starts at 2,000 hosts and more. Its parts say how
        far off it may be: a net CPU per start below that is not resolved."""
        w = self.nworkers
        self.workers.ask_all(300, [{"op": "phase"}] * w)
        cpu0, t = self.etcd.cpu_seconds(), time.monotonic()
        w0 = self.workers.ask_all(60, [{"op": "cpu"}] * w)
        rates, part_s = [], idle_s / IDLE_PARTS
        for _ in range(IDLE_PARTS):
            c, p = self.etcd.cpu_seconds(), time.monotonic()
            time.sleep(part_s)
            rates.append((self.etcd.cpu_seconds() - c) / (time.monotonic() - p))
        idle = (self.etcd.cpu_seconds() - cpu0) / (time.monotonic() - t)
        w1 = self.workers.ask_all(60, [{"op": "cpu"}] * w)
        m0, cpu0, t = self.etcd.metrics(), self.etcd.cpu_seconds(), time.monotonic()
        rng = random.Random(self.hosts)
        done = []
        while len(done) < starts or time.monotonic() - t < CYCLE_S:
            i = rng.choice(on) if on else rng.randrange(self.hosts)
            done.append(self.workers.ask(i % w, 300, op="attach", host=host_name(i),
                                         network=self.net(i)))
        m1, cpu1, seconds = self.etcd.metrics(), self.etcd.cpu_seconds(), time.monotonic() - t
        wanted = [d["key"] for d in done]
        deadline = time.monotonic() + settle
        while True:
            reps = self.workers.ask_all(300, [{"op": "report", "wanted": wanted}] * w)
            seen = cs.merge_seen(reps, wanted)
            if cs.complete(seen) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        w2 = self.workers.ask_all(60, [{"op": "cpu"}] * w)
        return {"hosts": self.hosts, "starts": len(done), "net_size": self.size,
                "channel": self.channel,
                "attach_ms": [(d["t1"] - d["t0"]) * 1e3 for d in done],
                **cs.propagation(done, seen),
                **cs.per_start(etcd_counts(m0), etcd_counts(m1), len(done), cpu1 - cpu0, idle,
                               seconds, cs.idle_error(rates, part_s, seconds)),
                "events_per_host_per_start": sum(r["events"] for r in reps)
                / max(1, self.hosts) / max(1, len(done)),
                "worker_rss_mb": sum(r["rss_mb"] for r in reps),
                # what each simulated host spent per start (receiving, applying, reconciling)
                "agent_cpu_us_per_start": 1e6 * cs.busy_cpu(w0, w1, w2)
                / max(1, self.hosts) / max(1, len(done)),
                "lag_max_ms": max(r["lag_max_ms"] for r in reps),
                "lag_p99_ms": max(r["lag_p99_ms"] for r in reps),
                "loadavg": os.getloadavg()[0]}

    def housekeeping(self) -> dict:
        return self.workers.ask(0, 600, op="housekeeping", host=host_name(0))


def run(ctx: Context, res: Results) -> None:
    cfg = ctx.cfg
    sim = Sim(ctx)
    ctx.progress(BENCH, f"etcd on 127.0.0.1:{sim.etcd.port}, {cfg.ctl_workers} worker "
                 f"process(es), networks of {sim.size} hosts, one etcd channel per "
                 f"{sim.channel}")
    steps: list[dict] = []
    fan: list[dict] = []
    stopped = ""
    t_start = time.monotonic()
    try:
        for target in cfg.ctl_hosts:
            if steps and cfg.ctl_fresh:
                # each size on a cluster of its own: every step measures a cluster that
                # came up at once (all its hosts joining and attaching their first container)
                sim.close()
                sim = Sim(ctx)
            why = _cannot_grow(ctx, steps, sim.hosts, target, t_start)
            if why:
                stopped = f"stopped before {target} hosts: {why}"
                ctx.progress(BENCH, stopped)
                break
            ctx.progress(BENCH, f"growing to {target} hosts ({cfg.ctl_per_host} endpoint(s) "
                         "each)")
            t, cpu0, have = time.monotonic(), sim.etcd.cpu_seconds(), sim.hosts
            try:
                grown = sim.grow(target, cfg.ctl_per_host)
                ctx.progress(BENCH, f"{target} hosts: joined in {grown['join_s']:.0f} s, "
                             f"endpoints in {grown['fill_s']:.0f} s; {cfg.ctl_starts} starts")
                step = {**sim.sample(cfg.ctl_starts), **grown, **sim.housekeeping()}
                before = 0 if cfg.ctl_fresh else sum(x["starts"] for x in steps)
                step["endpoints"] = target * cfg.ctl_per_host + before + step["starts"]
            except Exception as e:  # noqa: BLE001 - the limit of this machine: say it, keep data
                busy = (sim.etcd.cpu_seconds() - cpu0) / max(1e-9, time.monotonic() - t)
                stopped = (f"failed at {target} hosts: {type(e).__name__}: {e} (etcd used "
                           f"{100 * busy:.0f} % of a CPU meanwhile: the simulated agents, all "
                           "on this machine's CPUs, could not keep up)")
                ctx.progress(BENCH, stopped)
                break
            step["step_s"], step["grown_from"] = time.monotonic() - t, have
            steps.append(step)
            ctx.progress(BENCH, step_line(step))
        if cfg.ctl_big and not stopped:
            sim.close()
            sim = Sim(ctx)
            step = _big(ctx, sim)
            if "stopped" in step:
                stopped = step["stopped"]
            else:
                steps.append(step)
        if cfg.ctl_watchers:      # etcd alone: a fresh etcd, workers without agents
            sim.close()
            sim = Sim(ctx)
            fan = fanout(ctx, sim, cfg.ctl_watchers, cfg.ctl_starts, fan)
    except KeyboardInterrupt:
        stopped = stopped or f"interrupted after {sim.hosts} hosts"
        raise
    finally:
        _finish(ctx, res, steps, stopped, fan)


def _big(ctx: Context, sim: Sim) -> dict:
    """`ctl_big` hosts with `ctl_big_per_host` endpoints each, an agent on every one."""
    cfg = ctx.cfg
    hosts, per_host = cfg.ctl_big, cfg.ctl_big_per_host
    ctx.progress(BENCH, f"{hosts} hosts, {per_host} endpoints each, an agent on every one")
    t = time.monotonic()
    try:
        grown = sim.grow(hosts, per_host, bulk_last=True)
        step = {**sim.sample(cfg.ctl_starts), **grown, **sim.housekeeping(),
                "per_host": per_host, "big": True, "grown_from": 0,
                "step_s": time.monotonic() - t}
        step["endpoints"] = hosts * per_host + step["starts"]
    except Exception as e:  # noqa: BLE001 - the limit of this machine: say it, keep the rest
        why = f"failed at {hosts} hosts with {per_host} endpoints each: {type(e).__name__}: {e}"
        ctx.progress(BENCH, why)
        return {"stopped": why}
    ctx.progress(BENCH, step_line(step))
    return step


def _finish(ctx: Context, res: Results, steps: list[dict], stopped: str,
            fan: list[dict]) -> None:
    """Record the steps done so far (also when interrupted) and draw the curves."""
    record(res, steps, stopped, fan)
    cfg = ctx.cfg
    shared = ("the agents of a worker share one gRPC channel, each with its own lease and "
              "watch stream" if cfg.ctl_channel == "worker" else "its own channel")
    res.note(BENCH, f"simulation: networks of {cfg.ctl_net_size} hosts, each host count on "
             f"a fresh cluster; one etcd client per {cfg.ctl_channel} ({shared}); records "
             "decoded once per worker process; of each host's background endpoints one is "
             "attached by its agent (so that it programs its network's peers), the others (and "
             "the host's address block) written in transactions of 100 as its agent writes "
             "them; liveness leases of 2 minutes (10 s "
             "leases expired while the simulation ran behind); garbage collection every 10 "
             "minutes and no background sweep, not every 5 s (one pass of each is timed on one "
             "agent instead); the whole run under nice 19 on a machine other sessions share: "
             "'loop lag' is how far behind the simulated agents ran")
    curve = [s for s in steps if not s.get("big")]      # one point per cluster size
    if curve:
        out = getattr(ctx, "out", None) or os.path.join(HERE, "results")
        os.makedirs(out, exist_ok=True)
        err = draw_curves(curve, os.path.join(out, "control-scale.png"), stopped,
                          [f for f in fan if "last_ms" in f])
        if err:
            res.note(BENCH, f"no curves: {err}")


def _cannot_grow(ctx: Context, steps: list[dict], have: int, target: int,
                 t_start: float) -> str:
    if not steps:
        return ""
    last = steps[-1]
    need = cs.memory_need_mb(last, target)
    if need > mem_available_mb() * 0.8 or need > ctx.cfg.ctl_mem_mb:
        return (f"{target} agents would need ~{need:.0f} MB ({need / target:.1f} MB each, "
                f"as at {last['hosts']} hosts); {mem_available_mb():.0f} MB available, "
                f"limit {ctx.cfg.ctl_mem_mb:.0f} MB")
    # A host's changes reach the hosts of its networks: a step's time grows with the hosts.
    prev = last.get("grown_from", 0)
    need = last["step_s"] * (target - have) / max(1, last["hosts"] - prev)
    left = ctx.cfg.ctl_budget_s - (time.monotonic() - t_start)
    if need > left:
        return (f"the last step took {last['step_s']:.0f} s; growing to {target} hosts "
                f"would take ~{need / 60:.0f} min, {max(0, left) / 60:.0f} min of the "
                "budget left")
    return ""
