"""The README's "Control plane, simulated" section, from the last control run
(bench/results/control.json): its tables and what one etcd carries, read off its curves."""

from __future__ import annotations

from . import control_stats as cs
from . import stats

ISSUE_HOSTS = 5_000     # the largest cluster issue 12 asks about



def _pair(xs: list[float]) -> str:
    s = stats.summarize(xs)
    if s["median"] is None:
        return "–"
    return f"{_ms(s['median'])} / {_ms(s['p99'])}"


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _net_cpu(s: dict) -> str:
    """etcd's CPU per start net of its idle load, or `< resolution` where the idle load's own
    variation is larger (thousands of leases)."""
    net, res = s["etcd_cpu_ms_per_start"], s.get("etcd_cpu_ms_per_start_resolution", 0.0)
    return f"< {res:.1f}" if net < res else f"{net:.1f}"


def step_rows(steps: list[dict]) -> list[list[str]]:
    rows = []
    for s in steps:
        cpu = s.get("agent_cpu_us_per_start")
        hosts = f"{s['hosts']:,}" + (f" ({s['per_host']} endpoints each)" if s.get("big")
                                     else "")
        rows.append([hosts, f"{s['endpoints']:,}", f"{s['writes_per_start']:.2f}",
                     f"{s['events_per_host_per_start']:.2f}", _pair(s["last_sub_ms"]),
                     _pair(s["programmed_ms"]),
                     "–" if s.get("join_s") is None else f"{s['join_s']:.0f}",
                     "–" if s.get("fill_s") is None else f"{s['fill_s']:.0f}",
                     _net_cpu(s), f"{s['db_mb']:.1f}",
                     "–" if cpu is None else f"{cpu:.0f}",
                     f"{s.get('agent_mb') or s['worker_rss_mb'] / s['hosts']:.1f}",
                     _ms(s.get("lag_max_ms")),
                     f"{s.get('loadavg', 0):.0f}"])
    return rows


STEP_HEADER = ["hosts", "endpoints", "etcd keys written / start",
               "watch events / host / start", "start → every subscribed mirror p50 / p99 ms",
               "→ peer programmed on every subscribed host p50 / p99 ms",
               "every host joined, s", "its endpoints written and one attached on every "
               "host, s", "etcd CPU ms / start", "etcd DB MB",
               "agent CPU µs / host / start", "MB / agent", "simulation behind, max ms",
               "machine load"]
FAN_HEADER = ["watchers", "each watches", "events / watcher / write",
              "write → last watcher that must see it p50 / p99 ms", "etcd CPU ms / write",
              "etcd DB MB", "machine load"]


def fan_rows(fan: list[dict], size: int) -> list[list[str]]:
    what = {"whole": "the whole store (agents before their copy was scoped)",
            "scoped": f"its network's endpoints ({size} hosts; agents now)"}
    return [[f"{f['watchers']:,}", what[f["mode"]], f"{f['events_per_watcher_per_write']:.3f}",
             _pair(f["last_ms"]), f"{f['etcd_cpu_ms_per_start']:.2f}", f"{f['db_mb']:.0f}",
             f"{f.get('loadavg', 0):.0f}"] for f in fan]


def control_part(ctl, curves: str | None, table) -> list[str]:
    """The section's lines; `table` is report.table (passed in: report imports this)."""
    steps = ctl.meta.get("control", {}).get("steps", [])
    if not steps:
        return []
    m = ctl.meta
    commit = f" at commit {m['commit']}" if m.get("commit") else ""
    size = steps[0].get("net_size", 50)
    run = (f"`{ctl.command}`{commit}: {m.get('date', '')}, {m.get('machine', '')}, "
           f"{m.get('duration_s', 0):.0f} s.")
    agents = (f"**Agents**: real agents (`overnet.agent.daemon.Agent`: lease, its copy of "
              "the store scoped to its networks, watches, reconciler) over FakeDataplane, all "
              "in two worker processes on this machine's 2 CPUs, against one etcd; hosts in "
              f"networks of {size}, every host with its endpoints, then containers started one "
              "after another on random hosts. A *subscribed* host is one with endpoints on the "
              "started container's network: it must program the new peer, and only its copy "
              "holds that network's records and receives the change (the events and CPU per "
              "host are averages over all hosts). The times include how far the simulation "
              "ran behind (its event loops' lag; the machine's load average is the last "
              "column: other sessions share it). The agents of a worker share one etcd "
              "connection (a stream each): etcd's CPU per start is lower here than with a "
              "connection per host, which the etcd-alone figures below have. It is net of "
              "etcd's idle load (the agents' leases, pings), and shown as '< x' where that "
              "load varies more over the window (x: 2 SD) than the starts cost: with "
              "thousands of leases, only the etcd-alone figures resolve it.")
    out = ["### Control plane, simulated", "", run, "", agents, ""]
    if curves:
        out += [f"![control plane]({curves})", ""]
    out += [table(STEP_HEADER, step_rows(steps)), ""]
    fan = [f for f in m.get("control", {}).get("fanout", []) if "last_ms" in f]
    if fan:
        alone = (f"**etcd alone**: the agents stopped, {fan[0]['bulk']:,} endpoint records "
                 "loaded, then plain watchers (one etcd client each, as an agent's copy "
                 "holds it) watching the whole store (what every agent did before its copy was "
                 "scoped) or only their network's endpoints (what an agent's watch of its "
                 "networks' records now costs), and single-key writes timed to the last "
                 "watcher that must see them:")
        out += [alone, "", table(FAN_HEADER, fan_rows(fan, size)), "", carrying(steps, fan), ""]
    out += [f"- {n['text']}" for n in ctl.notes if n["bench"] == "control"]
    return out + [""]


def _biggest(fan: list[dict], mode: str) -> dict | None:
    got = [f for f in fan if f["mode"] == mode]
    return max(got, key=lambda f: f["watchers"]) if got else None


def carrying(steps: list[dict], fan: list[dict]) -> str:
    """What one etcd carries and what breaks first, read off the measured curves."""
    plain = [s for s in steps if not s.get("big")] or steps
    top = max(plain, key=lambda s: s["hosts"])
    big = next((s for s in steps if s.get("big")), None)
    writes = max(s["writes_per_start"] for s in steps)
    whole, scoped = _biggest(fan, "whole"), _biggest(fan, "scoped")
    parts = [(f"**What one etcd carries.** A container start writes {writes:.2f} etcd keys "
              f"whatever the cluster's size ({steps[0]['hosts']:,} to {top['hosts']:,} hosts)."
              " What grows is the fan-out: etcd sends each write to every watcher it "
              "concerns, and an agent now watches only its networks' records, so a start "
              f"concerns the {top.get('net_size', 50)} hosts of its network, not the cluster.")]
    etcd_rate = None
    if scoped:
        etcd_rate = cs.starts_per_core(scoped["etcd_cpu_ms_per_start"])
        parts.append(f"With {scoped['watchers']:,} hosts watching that way, a write costs "
                     f"etcd {scoped['etcd_cpu_ms_per_start']:.2f} ms of CPU (about "
                     f"{etcd_rate or 0:.0f} starts per second per etcd core) and reaches its "
                     f"network's hosts in {_ms(stats.summarize(scoped['last_ms'])['p99'])} ms "
                     f"(p99); {scoped['bulk']:,} endpoints take {scoped['db_mb']:.0f} MB of "
                     "database.")
    if whole:
        rate = cs.starts_per_core(whole["etcd_cpu_ms_per_start"])
        parts.append(f"Had each of them watched the whole store, as agents did before, a "
                     f"write would cost {whole['etcd_cpu_ms_per_start']:.1f} ms (about "
                     f"{rate or 0:.0f} starts per second per core) and reach the last host in "
                     f"{_ms(stats.summarize(whole['last_ms'])['p99'])} ms (p99).")
    parts.append(_agents(top))
    if big is not None:
        parts.append(f"At {big['hosts']:,} hosts and {big['endpoints']:,} endpoints (an "
                     f"agent on every host, {big['per_host']} endpoints each), a start reached "
                     f"every subscribed agent's copy in {_pair(big['last_sub_ms'])} ms and was "
                     f"programmed there in {_pair(big['programmed_ms'])} ms (p50 / p99); each "
                     f"agent took {big['worker_rss_mb'] / big['hosts']:.1f} MB (its copy: every "
                     "network's record, its network's hosts and endpoints) and one "
                     f"garbage-collection pass {big.get('gc_ms', 0):.1f} ms.")
    parts.append(_first(plain, etcd_rate))
    return " ".join(parts)


def _agents(top: dict) -> str:
    """The agents' side at the biggest measured step."""
    cpu = top.get("agent_cpu_us_per_start") or 0.0
    return (f"With real agents, at {top['hosts']:,} hosts a start reached every subscribed "
            f"host's copy in {_pair(top['last_sub_ms'])} ms (p50 / p99) and was programmed "
            f"there in {_pair(top['programmed_ms'])} ms, with all {top['hosts']:,} agents "
            f"sharing this machine's 2 CPUs; {top['events_per_host_per_start']:.3f} watch "
            f"events and {cpu:.0f} µs of agent CPU per host per start, averaged over all "
            "hosts: the others receive nothing of it.")


def _first(plain: list[dict], etcd_rate: float | None) -> str:
    """What breaks first, by comparing the limits the curves give."""
    top = max(plain, key=lambda s: s["hosts"])
    joins = [s for s in plain if s.get("join_s", 0) >= 1]
    text = ("What every host's copy holds of the cluster as a whole is one record a "
            "network: a host's own records (its address, its liveness) reach only the hosts "
            "of its networks, two a network (its membership and its presence there), so a "
            "host joining, restarting or leaving costs the others O(hosts of its networks)")
    if len(joins) >= 2:
        a, b = joins[-2], joins[-1]
        text += (f": all {b['hosts']:,} hosts joining took {b['join_s']:.0f} s here against "
                 f"{a['join_s']:.0f} s for {a['hosts']:,}, all on 2 CPUs")
    mb = [(s["hosts"], s.get("agent_mb") or s["worker_rss_mb"] / s["hosts"]) for s in plain]
    text += f", and a copy at {mb[-1][0]:,} hosts took {mb[-1][1]:.1f} MB per simulated agent"
    if top["hosts"] < ISSUE_HOSTS and joins:
        at = mb[-1][1]
        join = joins[-1]["join_s"] * ISSUE_HOSTS / joins[-1]["hosts"]
        text += (f". Agents on all {ISSUE_HOSTS:,} hosts were not run on this machine: by "
                 f"these curves they would hold ~{at:.1f} MB each (~{at * ISSUE_HOSTS / 1024:.0f}"
                 f" GB together) and their join would take ~{join / 60:.0f} min on its 2 CPUs")
    text += "."
    if etcd_rate:
        text += (f" What breaks first is etcd's own write rate, ~{etcd_rate:.0f} container "
                 "starts per second per etcd core whatever the hosts; a whole cluster "
                 "restarting at once is hosts × hosts-per-network events, spread over the "
                 "hosts' CPUs.")
    return text
