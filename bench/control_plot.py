"""The simulated control plane's figures: recorded into the results, and drawn as curves
against the number of hosts (bench/results/control-scale.png)."""

from __future__ import annotations

from . import stats
from .report import Results

BENCH = "control"


def step_line(s: dict) -> str:
    sub, prog = (stats.summarize(s[k]) for k in ("last_sub_ms", "programmed_ms"))
    return (f"{s['hosts']} hosts: {s['writes_per_start']:.2f} keys written/start, "
            f"{s['events_per_host_per_start']:.2f} events/host/start; start -> subscribed "
            f"mirrors p50 {sub['median'] or 0:.0f} / p99 {sub['p99'] or 0:.0f} ms, programmed "
            f"p50 {prog['median'] or 0:.0f} / p99 {prog['p99'] or 0:.0f} ms; etcd "
            f"{s['etcd_cpu_ms_per_start']:.1f} ms CPU/start (resolved to "
            f"{s.get('etcd_cpu_ms_per_start_resolution', 0):.1f} ms; idle "
            f"{s['etcd_idle_cpu_pct']:.0f} %), DB {s['db_mb']:.1f} MB; loop lag max "
            f"{s['lag_max_ms']:.0f} ms; GC pass "
            f"{s.get('gc_ms', 0):.1f} ms, sweep {s.get('sweep_ms', 0):.1f} ms; "
            f"{s['missing']} missed")


def _name(s: dict) -> tuple[str, str]:
    """A step's key and label in the results (the big step apart from the curve's)."""
    h = s["hosts"]
    if s.get("big"):
        return f"h{h}x{s['per_host']}", f"{h} hosts × {s['per_host']} endpoints"
    return f"h{h}", f"{h} hosts"


def record(res: Results, steps: list[dict], stopped: str, fan: list[dict]) -> None:
    for s in steps:
        n, h = _name(s)
        for key, label in (("last_sub_ms", "start to every subscribed host's mirror"),
                           ("programmed_ms", "start to its peer programmed on all subscribed"),
                           ("last_host_ms", "start to every mirror that received it"),
                           ("attach_ms", "attach call")):
            res.add_figure(f"ctl.{n}.{key}", BENCH, f"{h}: {label}", "ms", s[key])
        for key, label, unit in (
                ("writes_per_start", "etcd keys written per start", "count"),
                ("write_requests_per_start", "etcd write requests per start", "count"),
                ("events_per_host_per_start", "watch events per host per start", "count"),
                ("etcd_cpu_ms_per_start", "etcd CPU per start (net of idle)", "ms"),
                ("etcd_cpu_ms_per_start_resolution", "etcd CPU per start: smallest resolved "
                 "(2 SD of the idle load)", "ms"),
                ("etcd_idle_cpu_pct", "etcd CPU idle (leases, pings)", "%"),
                ("db_mb", "etcd database size", "MB"),
                ("worker_rss_mb", "agents' memory (all workers)", "MB"),
                ("lag_max_ms", "worker event loop lag, max", "ms"),
                ("gc_ms", "one agent's GC pass", "ms"),
                ("sweep_ms", "one agent's sweep", "ms")):
            if key in s:
                res.add_figure(f"ctl.{n}.{key}", BENCH, f"{h}: {label}", unit, [s[key]])
        res.add_absolute(f"ctl.{n}.writes", BENCH, f"etcd keys written per start, {h}",
                         f"ctl.{n}.writes_per_start", "median", "<=", 3)
        res.add_absolute(f"ctl.{n}.p99", BENCH, f"start to every subscribed host's mirror, "
                         f"p99, {h}", f"ctl.{n}.last_sub_ms", "p99", "<=", 1000)
    plain = [s for s in steps if not s.get("big")]
    if len(plain) >= 2:
        a, b = plain[0]["hosts"], plain[-1]["hosts"]
        res.add_ratio("ctl.writes_growth", BENCH, f"etcd keys written per start, {b} hosts / "
                      f"{a} hosts (1: constant)", f"ctl.h{b}.writes_per_start",
                      f"ctl.h{a}.writes_per_start", "<=", 1.1)
    for f in fan:
        if "last_ms" not in f:
            res.note(BENCH, f"etcd alone ({f['mode']}) stopped before {f['watchers']} "
                     f"watchers: {f['stopped']}")
            continue
        n, m = f["watchers"], f["mode"]
        res.add_figure(f"ctl.fan.{m}{n}.last", BENCH, f"etcd alone, {n} watchers ({m}): write "
                       "to the last watcher that must see it", "ms", f["last_ms"])
        res.add_figure(f"ctl.fan.{m}{n}.cpu", BENCH, f"etcd alone, {n} watchers ({m}): etcd "
                       "CPU per write (net of idle)", "ms", [f["etcd_cpu_ms_per_start"]])
        res.add_figure(f"ctl.fan.{m}{n}.db", BENCH, f"etcd alone, {n} watchers ({m}): "
                       f"database with {f['bulk']:,} endpoint records", "MB", [f["db_mb"]])
    res.meta.setdefault("control", {})["steps"] = steps
    if fan:
        res.meta["control"]["fanout"] = fan
    if stopped:
        res.note(BENCH, stopped)


def _series(steps: list[dict], key: str, q: str | None = None) -> list:
    if q is None:
        return [s.get(key) for s in steps]
    return [stats.summarize(s[key])[q] for s in steps]


def draw_curves(steps: list[dict], path: str, stopped: str = "",
                fan: list[dict] | None = None) -> str | None:
    """Four panels against the number of hosts: per start (etcd writes, watch events),
    start to the hosts (p50, p99), etcd's CPU per write and DB, the agents' memory."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (bash scripts/setup.sh --bench)"
    hosts = [s["hosts"] for s in steps]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    panels = [
        (ax[0][0], "per container start (agents)", [
            ("etcd keys written", _series(steps, "writes_per_start")),
            ("etcd write requests", _series(steps, "write_requests_per_start")),
            ("watch events per host", _series(steps, "events_per_host_per_start"))]),
        (ax[0][1], "start → hosts (ms; agents: solid, etcd alone: dashed)", [
            ("subscribed mirrors p50", _series(steps, "last_sub_ms", "median")),
            ("subscribed mirrors p99", _series(steps, "last_sub_ms", "p99")),
            ("peer programmed p99", _series(steps, "programmed_ms", "p99"))]),
        (ax[1][0], "etcd CPU ms per start/write (net of idle), DB MB", [
            ("agents: CPU per start", _series(steps, "etcd_cpu_ms_per_start")),
            ("agents: DB MB", _series(steps, "db_mb"))]),
        (ax[1][1], "simulated agents (FakeDataplane)", [
            ("MB per agent", [s.get("agent_mb") or s["worker_rss_mb"] / s["hosts"]
                              for s in steps]),
            ("GC pass ms (one agent)", _series(steps, "gc_ms")),
            ("all hosts joined, s / 10", [None if s.get("join_s") is None
                                          else s["join_s"] / 10 for s in steps]),
            ("loop lag max / 100 ms", [s["lag_max_ms"] / 100 for s in steps])]),
    ]
    for a, _, series in panels:
        for label, ys in series:
            a.plot(hosts, ys, marker="o", label=label)
    for mode, style in (("whole", "--"), ("scoped", ":")):
        f = [x for x in fan or [] if x.get("mode") == mode and "last_ms" in x]
        if not f:
            continue
        wx = [x["watchers"] for x in f]
        ax[0][0].plot(wx, [x["events_per_watcher_per_write"] for x in f], marker="s", ls=style,
                      label=f"etcd alone, {mode} watch: events per watcher")
        ax[0][1].plot(wx, [stats.summarize(x["last_ms"])["p99"] for x in f], marker="s",
                      ls=style, label=f"etcd alone, {mode} watch p99")
        ax[1][0].plot(wx, [x["etcd_cpu_ms_per_start"] for x in f], marker="s", ls=style,
                      label=f"etcd alone, {mode} watch: CPU per write")
        ax[1][0].plot(wx, [x["db_mb"] for x in f], marker="s", ls=style, alpha=0.5,
                      label=f"etcd alone: DB MB ({f[0]['bulk']:,} endpoints)")
    ax[0][0].set_ylim(bottom=0)
    for a, title, _ in panels:
        a.set_xscale("log")
        a.set_xlabel("hosts (watchers)")
        a.set_title(title, fontsize=9)
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.suptitle("overnet simulated control plane: one etcd, many agents"
                 + (f"\n{stopped}" if stopped else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
