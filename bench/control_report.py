"""The README's "Control plane, simulated" section, from the last control run
(bench/results/control.json): its tables and what one etcd carries, read off its curves."""

from __future__ import annotations

from . import control_stats as cs
from . import stats

BIG = 100_000      # the endpoint count, for what one host's mirror would hold


def _pair(xs: list[float]) -> str:
    s = stats.summarize(xs)
    if s["median"] is None:
        return "–"
    return f"{_ms(s['median'])} / {_ms(s['p99'])}"


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def step_rows(steps: list[dict]) -> list[list[str]]:
    rows = []
    for s in steps:
        cpu = s.get("agent_cpu_us_per_start")
        hosts = f"{s['hosts']:,}" + (f" ({s['agents']} agents)" if s.get("hybrid") else "")
        rows.append([hosts, f"{s['endpoints']:,}", f"{s['writes_per_start']:.2f}",
                     f"{s['events_per_host_per_start']:.2f}", _pair(s["last_sub_ms"]),
                     _pair(s["programmed_ms"]),
                     _ms(stats.summarize(s["last_host_ms"])["p99"]),
                     f"{s['etcd_cpu_ms_per_start']:.1f}", f"{s['db_mb']:.1f}",
                     "–" if cpu is None else f"{cpu:.0f}",
                     f"{s.get('agent_mb') or s['worker_rss_mb'] / s['hosts']:.1f}",
                     _ms(s.get("lag_max_ms")),
                     f"{s.get('loadavg', 0):.0f}"])
    return rows


STEP_HEADER = ["hosts", "endpoints", "etcd keys written / start",
               "watch events / host / start", "start → every subscribed mirror p50 / p99 ms",
               "→ peer programmed on every subscribed host p50 / p99 ms",
               "→ every host's mirror p99 ms", "etcd CPU ms / start", "etcd DB MB",
               "agent CPU µs / host / start", "MB / agent", "simulation behind, max ms",
               "machine load"]
FAN_HEADER = ["watchers", "each watches", "events / watcher / write",
              "write → last watcher that must see it p50 / p99 ms", "etcd CPU ms / write",
              "etcd DB MB", "machine load"]


def fan_rows(fan: list[dict], size: int) -> list[list[str]]:
    what = {"whole": "the whole store", "scoped": f"its network's endpoints ({size} hosts)"}
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
    agents = (f"**Agents**: real agents (`overnet.agent.daemon.Agent`: lease, mirror of the "
              "whole store, watch, reconciler) over FakeDataplane, all in two worker processes "
              f"on this machine's 2 CPUs, against one etcd; hosts in networks of {size}, every "
              "host with its endpoints, then containers started one after another on random "
              "hosts. A *subscribed* host is one with endpoints on the started container's "
              "network: it must program the new peer. Every mirror still receives every "
              "change (agents watch the whole store), so the last column but one is what each "
              "host spends on every start in the cluster. The times include how far the simulation "
              "ran behind (its event loops' lag; the machine's load average is the last "
              "column: other sessions share it). The agents of a worker share one etcd "
              "connection (a stream each): etcd's CPU per start is lower here than with a "
              "connection per host, which the etcd-alone figures below have.")
    out = ["### Control plane, simulated", "", run, "", agents, ""]
    if curves:
        out += [f"![control plane]({curves})", ""]
    out += [table(STEP_HEADER, step_rows(steps)), ""]
    fan = [f for f in m.get("control", {}).get("fanout", []) if "last_ms" in f]
    if fan:
        alone = (f"**etcd alone**: the agents stopped, {fan[0]['bulk']:,} endpoint records "
                 "loaded, then plain watchers (one etcd client each, as an agent's mirror "
                 "holds it) watching the whole store (what every agent does today) or only "
                 "their network's endpoints (what an agent watching only its networks would), "
                 "and single-key writes timed to the last watcher that must see them:")
        out += [alone, "", table(FAN_HEADER, fan_rows(fan, size)), "", carrying(steps, fan), ""]
    out += [f"- {n['text']}" for n in ctl.notes if n["bench"] == "control"]
    return out + [""]


def _biggest(fan: list[dict], mode: str) -> dict | None:
    got = [f for f in fan if f["mode"] == mode]
    return max(got, key=lambda f: f["watchers"]) if got else None


def carrying(steps: list[dict], fan: list[dict]) -> str:
    """What one etcd carries and what breaks first, read off the measured curves."""
    plain = [s for s in steps if not s.get("hybrid")] or steps
    top = max(plain, key=lambda s: s["hosts"])
    big = next((s for s in steps if s.get("hybrid")), None)
    writes = max(s["writes_per_start"] for s in steps)
    whole, scoped = _biggest(fan, "whole"), _biggest(fan, "scoped")
    parts = [(f"**What one etcd carries.** A container start writes {writes:.2f} etcd keys "
              f"whatever the cluster's size ({steps[0]['hosts']:,} to {top['hosts']:,} hosts)."
              " What grows is the fan-out: etcd sends each write to every watcher it "
              "concerns.")]
    etcd_rate = None
    if whole:
        etcd_rate = cs.starts_per_core(whole["etcd_cpu_ms_per_start"])
        parts.append(f"With {whole['watchers']:,} hosts each watching the whole store, a "
                     f"write costs etcd {whole['etcd_cpu_ms_per_start']:.1f} ms of CPU: one "
                     f"etcd core carries about {etcd_rate or 0:.0f} container starts per "
                     "second, each reaching the last host in "
                     f"{_ms(stats.summarize(whole['last_ms'])['p99'])} ms (p99); "
                     f"{whole['bulk']:,} endpoints take {whole['db_mb']:.0f} MB of database.")
    if whole and scoped:
        rate = cs.starts_per_core(scoped["etcd_cpu_ms_per_start"])
        parts.append(f"Watching only their networks' endpoints, the same {scoped['watchers']:,}"
                     f" hosts cost {scoped['etcd_cpu_ms_per_start']:.2f} ms per write (about "
                     f"{rate or 0:.0f} starts per second per core) and a start reaches its "
                     f"network's hosts in {_ms(stats.summarize(scoped['last_ms'])['p99'])} ms "
                     f"(p99): that is what a scoped watch in the agent would buy.")
    parts.append(_agents(top))
    if big is not None:
        parts.append(f"At {big['hosts']:,} hosts and {big['endpoints']:,} endpoints ("
                     f"{big['agents']} real agents on the started containers' network, the "
                     "other hosts whole-store watchers with their records), a start reached "
                     f"every subscribed agent's mirror in {_pair(big['last_sub_ms'])} ms and "
                     f"was programmed there in {_pair(big['programmed_ms'])} ms (p50 / p99); "
                     f"each agent's mirror took {big['agent_mb']:.0f} MB and one garbage-"
                     f"collection pass {big.get('gc_ms', 0):.0f} ms.")
    parts.append(_first(top, etcd_rate, whole))
    return " ".join(parts)


def _agents(top: dict) -> str:
    """The agents' side at the biggest measured step."""
    cpu = top.get("agent_cpu_us_per_start", 0.0)
    text = (f"With real agents, at {top['hosts']:,} hosts a start reached every subscribed "
            f"host's mirror in {_pair(top['last_sub_ms'])} ms (p50 / p99) and was programmed "
            f"there in {_pair(top['programmed_ms'])} ms, with all {top['hosts']:,} agents "
            f"sharing this machine's 2 CPUs: each host spent {cpu:.0f} µs of CPU on every "
            "start in the cluster, subscribed or not (its mirror receives every change)")
    if cpu:
        text += (f", so at {0.1e6 / cpu:.0f} starts per second cluster-wide every host would "
                 "spend a tenth of a core on other hosts' starts")
    return text + "."


def _first(top: dict, etcd_rate: float | None, whole: dict | None) -> str:
    """What breaks first, by comparing the limits the curves give."""
    cpu = top.get("agent_cpu_us_per_start", 0.0)
    agent_rate = 0.1e6 / cpu if cpu else None
    per_key = top["worker_rss_mb"] / top["hosts"] / max(1.0, top["keys"])
    big_keys = BIG + top["keys"] - top["endpoints"]
    gc_big = top.get("gc_ms", 0.0) * BIG / max(1, top["endpoints"])
    share = top.get("net_size", 50) / top["hosts"]
    scoped_keys = top["keys"] - top["endpoints"] * (1 - share)
    if etcd_rate is not None and (agent_rate is None or etcd_rate < agent_rate):
        first = (f"What breaks first is etcd's fan-out of the whole-store watch: at "
                 f"{whole['watchers']:,} hosts it caps the cluster at ~{etcd_rate:.0f} starts "
                 "per second per etcd core, long before the agents' own share of each start "
                 "matters")
    else:
        first = ("What breaks first is the agents' share of every start: each host handles "
                 "every change in the cluster")
    return (first + f"; next, the whole-store mirror itself: each host holds every record "
            f"({top['worker_rss_mb'] / top['hosts']:.1f} MB per simulated agent at "
            f"{top['keys']:,.0f} keys, ~{per_key * big_keys:.0f} MB at {BIG:,} endpoints) and "
            f"its garbage collection reads every endpoint record every 5 s "
            f"({top.get('gc_ms', 0):.1f} ms a pass at {top['endpoints']:,} endpoints, "
            f"~{gc_big:.0f} ms at {BIG:,}). A mirror scoped to the host's networks (a watch "
            "per network it has endpoints on, besides the hosts' and networks' records) "
            f"shrinks all three: 1 to {share:.3f} events per host per start at "
            f"{top['hosts']:,} hosts, a copy of ~{scoped_keys:,.0f} keys instead of "
            f"{top['keys']:,.0f}, a GC pass over that copy. It is a change to the agent's core "
            "(its view reads every kind of record from one mirror of the whole store, and "
            "garbage collection, which removes dead hosts' records in every network, would need "
            "another owner), measured here on etcd's side only.")
