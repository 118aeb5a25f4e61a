"""5. Simulated control plane: how many hosts one etcd carries.

Many real agents (overnet.agent.daemon.Agent: own etcd connection, liveness lease, mirror of
the whole store, reconciler) over FakeDataplane, a few worker processes holding hundreds or
thousands of them each (bench/control_worker.py), against one real etcd this benchmark starts
on loopback. The host count grows in steps (default 100, 1,000, 5,000), every 100 hosts on
their own overlay network (each host reconciles only the networks it has endpoints on, but
every mirror receives every change: the store's fan-out is what is measured); at each step
every new host gets a few background endpoints, then S containers are started one after
another on random hosts and measured:

  - etcd keys written per start (mvcc puts + deletes) and write requests per start;
  - watch events received per host per start (every mirror counts what it receives);
  - time from the start of an attach until every host's mirror has the new endpoint
    (p50 and p99 over the starts, of the last host to see it);
  - etcd's CPU time per start, its database size, its watchers; the workers' memory per agent.

The run stops growing where the machine cannot go on (memory, start-up failures, the time
budget) and says why. Output: bench/results/control.{json,md,png}; the PNG has the curves.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from . import stats
from overnet.store import keys

from .control_worker import FANOUT
from .labs import HERE, Context, LineProcess
from .report import Results

BENCH = "control"
GROUP = 100       # hosts per overlay network: a host reconciles only the networks it is on


def network_of(i: int) -> str:
    return f"ctl{i // GROUP}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """A throw-away single-member etcd on loopback; stop() kills exactly it and its data."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bn-ctl-etcd-")
        self.port, peer = _free_port(), _free_port()
        url, purl = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{peer}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "wb")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "ctl", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
             "--initial-cluster", f"ctl={purl}", "--quota-backend-bytes", str(8 << 30)],
            stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.metrics()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("etcd did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return stats.parse_prometheus(r.read().decode())

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Workers:
    """The worker processes; host i lives in worker i % len(workers)."""

    def __init__(self, count: int, store_url: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="bn-ctl-")
        root = os.path.dirname(HERE)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        self.procs = [LineProcess([sys.executable, "-m", "bench.control_worker", store_url,
                                   os.path.join(self.dir, f"w{i}")], env=env)
                      for i in range(count)]
        for p in self.procs:
            p.expect("ready", 60)

    def ask(self, i: int, timeout: float, **cmd) -> dict:
        self.procs[i].send(json.dumps(cmd))
        return json.loads(self.procs[i].expect("ok", timeout))

    def ask_all(self, timeout: float, cmds: list[dict | None]) -> list[dict | None]:
        """The same kind of command to several workers at once; None: leave that one out."""
        for p, c in zip(self.procs, cmds):
            if c is not None:
                p.send(json.dumps(c))
        return [json.loads(p.expect("ok", timeout)) if c is not None else None
                for p, c in zip(self.procs, cmds)]

    def kill(self) -> None:
        """Workers stuck in a step that did not finish: SIGKILL, then wait for each."""
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
        self.procs = []

    def close(self) -> None:
        for p in self.procs:
            try:
                p.send(json.dumps({"op": "stop"}))
                p.expect("ok", 120)
            except Exception:   # noqa: BLE001 - clean-up goes on
                pass
            p.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def host_name(i: int) -> str:
    return f"h{i:05d}"


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def etcd_counts(m: dict[str, float]) -> dict[str, float]:
    return {"keys_written": stats.metric_sum(m, "etcd_mvcc_put_total")
            + stats.metric_sum(m, "etcd_mvcc_delete_total"),
            "write_requests": sum(stats.metric_sum(m, "grpc_server_handled_total",
                                                   grpc_method=u)
                                  for u in ("Put", "DeleteRange", "Txn")),
            "db_bytes": stats.metric_sum(m, "etcd_mvcc_db_total_size_in_bytes"),
            "watchers": stats.metric_sum(m, "etcd_debugging_mvcc_watcher_total"),
            "keys": stats.metric_sum(m, "etcd_debugging_mvcc_keys_total")}


class Sim:
    """One growing simulated cluster: etcd, workers, and the hosts started so far."""

    def __init__(self, ctx: Context, workers: int) -> None:
        self.ctx = ctx
        self.etcd = Etcd()
        ctx.closers.append(self.etcd.stop)
        self.nworkers = workers
        self.workers = Workers(workers, self.etcd.url)
        ctx.closers.append(self.workers.close)
        self.hosts = 0
        self.networks: set[str] = set()
        self.step_limit = ctx.cfg.ctl_step_limit_s

    def fresh_workers(self) -> None:
        """New workers (no agents) on the same etcd, after a step that did not finish."""
        self.workers.kill()
        self.workers = Workers(self.nworkers, self.etcd.url)
        self.ctx.closers.append(self.workers.close)

    def grow(self, target: int, per_host: int) -> dict:
        """Start hosts up to `target`, then give each new one `per_host` endpoints."""
        w = len(self.workers.procs)
        new = list(range(self.hosts, target))
        t = time.monotonic()
        chunk = 100
        for lo in range(0, len(new), chunk):
            part = new[lo:lo + chunk]
            cmds = []
            for k in range(w):
                mine = [i for i in part if i % w == k]
                cmds.append({"op": "start", "names": [host_name(i) for i in mine],
                             "first": mine[0]} if mine else None)
            out = self.workers.ask_all(600, cmds)
            rss = sum(o["rss_mb"] for o in out if o)
            self.ctx.progress(BENCH, f"  {part[-1] + 1} hosts up ({time.monotonic() - t:.0f} s, "
                              f"workers {rss:.0f} MB)")
        join_s = time.monotonic() - t
        for i in new:      # each network made once, by its first host, before any attach
            if network_of(i) not in self.networks:
                self.workers.ask(i % w, 120, op="network", host=host_name(i),
                                 name=network_of(i))
                self.networks.add(network_of(i))
        self.workers.ask_all(600, [{"op": "sync", "networks": sorted(self.networks)}] * w)
        t = time.monotonic()
        fills = []
        for k in range(w):
            fills.append({"op": "fill_new", "hosts": [host_name(i) for i in new if i % w == k],
                          "per_host": per_host, "networks": [network_of(i) for i in new
                                                             if i % w == k]}
                         if per_host and any(i % w == k for i in new) else None)
        self.workers.ask_all(self.step_limit, fills)
        self.hosts = target
        return {"join_s": join_s, "fill_s": time.monotonic() - t}

    def sample(self, starts: int, settle: float = 60.0) -> dict:
        """`starts` attaches one after another on random hosts, and what they cost."""
        w = len(self.workers.procs)
        self.workers.ask_all(120, [{"op": "phase"}] * w)
        m0, cpu0 = self.etcd.metrics(), self.etcd.cpu_seconds()
        rng = random.Random(self.hosts)
        done = []
        for _ in range(starts):
            i = rng.randrange(self.hosts)
            done.append(self.workers.ask(i % w, 120, op="attach", host=host_name(i),
                                         network=network_of(i)))
        m1, cpu1 = self.etcd.metrics(), self.etcd.cpu_seconds()
        wanted = [d["key"] for d in done]
        deadline = time.monotonic() + settle
        while True:
            reps = self.workers.ask_all(300, [{"op": "report", "wanted": wanted}] * w)
            seen = {k: [t for r in reps for t in r["seen"][k]] for k in wanted}
            if all(len(v) >= self.hosts for v in seen.values()) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        return summarize_sample(done, seen, reps, self.hosts, etcd_counts(m0),
                                etcd_counts(m1), cpu1 - cpu0)


def summarize_sample(done: list[dict], seen: dict[str, list[float]], reps: list[dict],
                     hosts: int, c0: dict, c1: dict, cpu: float) -> dict:
    n = len(done)
    last, every, missing = [], [], 0
    for d in done:
        times = seen[d["key"]]
        missing += max(0, hosts - len(times))
        if times:
            last.append((max(times) - d["t0"]) * 1e3)
            every += [(t - d["t0"]) * 1e3 for t in times]
    return {
        "hosts": hosts, "starts": n,
        "attach_ms": [(d["t1"] - d["t0"]) * 1e3 for d in done],
        "last_host_ms": last, "every_host_ms": stats.summarize(every),
        "missing": missing,
        "writes_per_start": (c1["keys_written"] - c0["keys_written"]) / n,
        "write_requests_per_start": (c1["write_requests"] - c0["write_requests"]) / n,
        "events_per_host_per_start": sum(r["events"] for r in reps) / max(1, hosts) / n,
        "etcd_cpu_ms_per_start": cpu * 1e3 / n,
        "db_mb": c1["db_bytes"] / 2**20, "keys": c1["keys"], "watchers": c1["watchers"],
        "worker_rss_mb": sum(r["rss_mb"] for r in reps),
    }


def run(ctx: Context, res: Results) -> None:
    cfg = ctx.cfg
    sim = Sim(ctx, cfg.ctl_workers)
    ctx.progress(BENCH, f"etcd on 127.0.0.1:{sim.etcd.port}, {cfg.ctl_workers} worker "
                 "process(es)")
    steps: list[dict] = []
    fan: list[dict] = []
    stopped = ""
    t_start = time.monotonic()
    try:
        for target in cfg.ctl_hosts:
            why = _cannot_grow(ctx, steps, sim.hosts, target, t_start)
            if why:
                stopped = f"stopped before {target} hosts: {why}"
                ctx.progress(BENCH, stopped)
                break
            ctx.progress(BENCH, f"growing to {target} hosts ({cfg.ctl_per_host} endpoint(s) "
                         "each)")
            t, cpu0 = time.monotonic(), sim.etcd.cpu_seconds()
            try:
                grown = sim.grow(target, cfg.ctl_per_host)
                ctx.progress(BENCH, f"{target} hosts: joined in {grown['join_s']:.0f} s, "
                             f"endpoints in {grown['fill_s']:.0f} s; {cfg.ctl_starts} starts")
                step = {**sim.sample(cfg.ctl_starts), **grown, "step_s": 0.0,
                        "endpoints": target * cfg.ctl_per_host
                        + cfg.ctl_starts * (len(steps) + 1)}
            except Exception as e:  # noqa: BLE001 - the limit of this machine: say it, keep data
                busy = (sim.etcd.cpu_seconds() - cpu0) / max(1e-9, time.monotonic() - t)
                stopped = (f"failed at {target} hosts: {type(e).__name__}: {e} (etcd used "
                           f"{100 * busy:.0f} % of a CPU meanwhile: the simulated agents, all "
                           "on this machine's CPUs, could not keep up)")
                ctx.progress(BENCH, stopped)
                break
            step["step_s"] = time.monotonic() - t
            steps.append(step)
            ctx.progress(BENCH, _line(step))
        if cfg.ctl_watchers:
            if stopped.startswith("failed"):
                sim.fresh_workers()
            fan = fanout(ctx, sim, cfg.ctl_watchers, cfg.ctl_starts, fan)
    except KeyboardInterrupt:
        stopped = stopped or f"interrupted after {sim.hosts} hosts"
        raise
    finally:
        _finish(ctx, res, steps, stopped, fan)


def fanout(ctx: Context, sim: Sim, targets: tuple, writes: int, out: list[dict],
           bulk: int = 100_000, size: int = 350) -> list[dict]:
    """etcd alone: the agents stop, `bulk` endpoint-sized records are loaded (the database
    of a 100,000-endpoint cluster), then plain watchers of the whole store (one connection
    each, what every agent's mirror holds) grow in steps and `writes` single-key writes are
    timed to the last watcher. Appends one dict per step to `out`."""
    w = len(sim.workers.procs)
    sim.workers.ask_all(600, [{"op": "stop"}] * w)
    before = etcd_counts(sim.etcd.metrics())["db_bytes"]
    t = time.monotonic()
    sim.workers.ask(0, 1800, op="bulk", prefix=keys.ENDPOINTS + "bulk/", count=bulk,
                    size=size)
    load_s = time.monotonic() - t
    have = 0
    for target in targets:
        if time.monotonic() - ctx.t0 > ctx.cfg.ctl_budget_s * 1.5:
            out.append({"watchers": target, "stopped": "time budget"})
            break
        ctx.progress(BENCH, f"etcd fan-out: {target} watchers of the whole store")
        per = [(target - have) // w + (1 if k < (target - have) % w else 0) for k in range(w)]
        sim.workers.ask_all(1200, [{"op": "watchers", "count": n} if n else None for n in per])
        have = target
        sim.workers.ask_all(120, [{"op": "phase"}] * w)
        m0, cpu0 = sim.etcd.metrics(), sim.etcd.cpu_seconds()
        done = [sim.workers.ask(0, 120, op="put", key=f"{FANOUT}{target}-{i}", size=size)
                for i in range(writes)]
        cpu1 = sim.etcd.cpu_seconds()
        deadline = time.monotonic() + 60
        while True:
            reps = sim.workers.ask_all(300, [{"op": "report", "wanted": [d["key"] for d in done]}]
                                       * w)
            seen = {d["key"]: [x for r in reps for x in r["seen"][d["key"]]] for d in done}
            if all(len(v) >= target for v in seen.values()) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        m1 = sim.etcd.metrics()
        s = summarize_sample(done, seen, reps, target, etcd_counts(m0), etcd_counts(m1),
                             cpu1 - cpu0)
        s.update({"watchers": target, "bulk": bulk, "bulk_load_s": load_s,
                  "db_mb_before_bulk": before / 2**20})
        out.append(s)
        last = stats.summarize(s["last_host_ms"])
        ctx.progress(BENCH, f"{target} watchers: write to last watcher p50 "
                     f"{last['median'] or 0:.0f} ms p99 {last['p99'] or 0:.0f} ms, etcd "
                     f"{s['etcd_cpu_ms_per_start']:.1f} ms CPU/write, DB {s['db_mb']:.0f} MB, "
                     f"{s['missing']} missed")
    return out


def _finish(ctx: Context, res: Results, steps: list[dict], stopped: str,
            fan: list[dict] | None = None) -> None:
    """Record the steps done so far (also when interrupted) and draw the curves."""
    record(res, steps, stopped)
    for s in fan or []:
        if "last_host_ms" not in s:
            res.note(BENCH, f"etcd fan-out stopped before {s['watchers']} watchers: "
                     f"{s['stopped']}")
            continue
        n = s["watchers"]
        res.add_figure(f"ctl.fan{n}.last", BENCH, f"etcd alone, {n} watchers: write to the "
                       "last watcher", "ms", s["last_host_ms"])
        res.add_figure(f"ctl.fan{n}.cpu", BENCH, f"etcd alone, {n} watchers: etcd CPU per "
                       "write", "ms", [s["etcd_cpu_ms_per_start"]])
        res.add_figure(f"ctl.fan{n}.db", BENCH, f"etcd alone, {n} watchers: database with "
                       f"{s['bulk']:,} endpoint records", "MB", [s["db_mb"]])
    if fan:
        res.meta.setdefault("control", {})["fanout"] = fan
    res.note(BENCH, "the workers cache typing.get_type_hints per record class "
             "(store/records.py calls it on every decode, ~0.4 ms, most of an agent's CPU per "
             "watch event; BENCH_CTL_UNCACHED=1 measures without)")
    if steps:
        out = getattr(ctx, "out", None) or os.path.join(HERE, "results")
        os.makedirs(out, exist_ok=True)
        err = draw_curves(steps, os.path.join(out, "control-scale.png"), stopped,
                          [f for f in fan or [] if "last_host_ms" in f])
        if err:
            res.note(BENCH, f"no curves: {err}")


def draw_curves(steps: list[dict], path: str, stopped: str = "",
                fan: list[dict] | None = None) -> str | None:
    """Four panels against the number of hosts: etcd writes and watch events per start,
    propagation to every host (p50, p99), etcd CPU per start and DB size, agent memory."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (bash scripts/setup.sh --bench)"
    hosts = [s["hosts"] for s in steps]
    last = [stats.summarize(s["last_host_ms"]) for s in steps]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        (ax[0][0], "per container start", [
            ("etcd keys written", [s["writes_per_start"] for s in steps]),
            ("etcd write requests", [s["write_requests_per_start"] for s in steps]),
            ("watch events per host", [s["events_per_host_per_start"] for s in steps])]),
        (ax[0][1], "start → every host's mirror (ms)", [
            ("p50", [x["median"] for x in last]), ("p99", [x["p99"] for x in last]),
            ("attach call p50", [stats.median(s["attach_ms"]) for s in steps])]),
        (ax[1][0], "etcd", [
            ("CPU ms per start", [s["etcd_cpu_ms_per_start"] for s in steps]),
            ("DB size MB", [s["db_mb"] for s in steps])]),
        (ax[1][1], "agents (simulated, FakeDataplane)", [
            ("MB per agent", [s["worker_rss_mb"] / s["hosts"] for s in steps]),
            ("join s per 100 hosts", [100 * s["join_s"] / max(1, s["hosts"]) for s in steps])]),
    ]
    for a, title, series in panels:
        for label, ys in series:
            a.plot(hosts, ys, marker="o", label=label)
    if fan:
        wx = [f["watchers"] for f in fan]
        flast = [stats.summarize(f["last_host_ms"]) for f in fan]
        ax[0][1].plot(wx, [x["median"] for x in flast], marker="s", ls="--",
                      label="etcd alone (plain watchers) p50")
        ax[0][1].plot(wx, [x["p99"] for x in flast], marker="s", ls="--",
                      label="etcd alone p99")
        ax[1][0].plot(wx, [f["etcd_cpu_ms_per_start"] for f in fan], marker="s", ls="--",
                      label="CPU ms per write, etcd alone")
        ax[1][0].plot(wx, [f["db_mb"] for f in fan], marker="s", ls=":",
                      label=f"DB MB with {fan[0]['bulk']:,} endpoints")
        a.set_xscale("log")
        a.set_xlabel("hosts")
        a.set_title(title, fontsize=9)
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.suptitle("overnet simulated control plane: one etcd, many agents"
                 + (f"\n{stopped}" if stopped else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _cannot_grow(ctx: Context, steps: list[dict], have: int, target: int,
                 t_start: float) -> str:
    if steps:
        last = steps[-1]
        per_host_mb = last["worker_rss_mb"] / max(1, last["hosts"])
        need = per_host_mb * (target - have) * 1.3
        if need > mem_available_mb() * 0.8:
            return (f"{target - have} more agents need ~{need:.0f} MB "
                    f"({per_host_mb:.1f} MB each), {mem_available_mb():.0f} MB available")
        # Every agent handles every change and scans its mirror doing so: a step's time
        # grows with the square of the hosts; project the last step's that way.
        prev = steps[-2]["hosts"] if len(steps) > 1 else 0
        need = last["step_s"] * (target ** 2 - have ** 2) / max(1, have ** 2 - prev ** 2)
        left = ctx.cfg.ctl_budget_s - (time.monotonic() - t_start)
        if need > left:
            return (f"the last step took {last['step_s']:.0f} s; growing to {target} hosts "
                    f"would take ~{need / 60:.0f} min (time grows with hosts²), "
                    f"{max(0, left) / 60:.0f} min of the budget left")
    return ""


def _line(s: dict) -> str:
    last = stats.summarize(s["last_host_ms"])
    return (f"{s['hosts']} hosts: {s['writes_per_start']:.2f} keys written/start, "
            f"{s['events_per_host_per_start']:.2f} events/host/start, all hosts have it "
            f"p50 {last['median'] or 0:.0f} ms p99 {last['p99'] or 0:.0f} ms, "
            f"etcd {s['etcd_cpu_ms_per_start']:.1f} ms CPU/start, DB {s['db_mb']:.1f} MB, "
            f"{s['missing']} missed")


def record(res: Results, steps: list[dict], stopped: str) -> None:
    for s in steps:
        h = s["hosts"]
        res.add_figure(f"ctl.h{h}.last_host", BENCH, f"{h} hosts: start to every host's mirror "
                       "having it", "ms", s["last_host_ms"])
        res.add_figure(f"ctl.h{h}.attach", BENCH, f"{h} hosts: attach call", "ms",
                       s["attach_ms"])
        for key, label, unit in (
                ("writes_per_start", "etcd keys written per start", "count"),
                ("write_requests_per_start", "etcd write requests per start", "count"),
                ("events_per_host_per_start", "watch events per host per start", "count"),
                ("etcd_cpu_ms_per_start", "etcd CPU per start", "ms"),
                ("db_mb", "etcd database size", "MB"),
                ("worker_rss_mb", "agents' memory (all workers)", "MB")):
            res.add_figure(f"ctl.h{h}.{key}", BENCH, f"{h} hosts: {label}", unit, [s[key]])
        res.add_absolute(f"ctl.h{h}.writes", BENCH, f"etcd keys written per start, {h} hosts",
                         f"ctl.h{h}.writes_per_start", "median", "<=", 3)
        res.add_absolute(f"ctl.h{h}.p99", BENCH, f"start to every host's mirror, p99, {h} hosts",
                         f"ctl.h{h}.last_host", "p99", "<=", 1000)
    if len(steps) >= 2:
        a, b = steps[0]["hosts"], steps[-1]["hosts"]
        res.add_ratio("ctl.writes_growth", BENCH, f"etcd keys written per start, {b} hosts / "
                      f"{a} hosts (1: constant)", f"ctl.h{b}.writes_per_start",
                      f"ctl.h{a}.writes_per_start", "<=", 1.1)
    res.meta.setdefault("control", {})["steps"] = steps
    if stopped:
        res.note(BENCH, stopped)
