"""The simulated control plane's topology and what its samples say (pure, no I/O).

Topology: hosts in networks of `size` (host i is on network i // size), as a cluster of many
teams each on its own overlay network: a container start concerns the hosts of its network
(the ones that must program the new peer: the *subscribed* hosts), not the whole cluster.
"""

from __future__ import annotations

import math
import statistics

from . import stats


def network_of(host: int, size: int) -> str:
    """The overlay network host number `host` is on."""
    if size < 1:
        raise ValueError(f"network size {size}: expected 1 or more hosts")
    return f"ctl{host // size}"


def networks(hosts: int, size: int) -> list[str]:
    """Every network of `hosts` hosts in networks of `size`, in host order."""
    return [network_of(i, size) for i in range(0, hosts, size)]


def members(net: int, hosts: int, size: int) -> range:
    """The host numbers of network number `net` in a cluster of `hosts` hosts."""
    return range(net * size, min(hosts, (net + 1) * size))


def by_worker(items: list, workers: int) -> list[list]:
    """Host i's items go to worker i % workers: items are (host, ...) tuples."""
    out: list[list] = [[] for _ in range(workers)]
    for item in items:
        out[item[0] % workers].append(item)
    return out


def merge_seen(reps: list[dict], wanted: list[str]) -> dict[str, dict]:
    """The workers' reports joined per key: every mirror's time ("all"), the subscribed hosts'
    mirrors ("sub") and peers programmed ("prog"), how many hosts are subscribed ("nsub")."""
    out = {}
    for key in wanted:
        parts = [r["seen"][key] for r in reps]
        out[key] = {"all": [t for p in parts for t in p["all"]],
                    "sub": [t for p in parts for t in p["sub"]],
                    "prog": [t for p in parts for t in p["prog"]],
                    "nsub": sum(p["nsub"] for p in parts)}
    return out


def complete(seen: dict[str, dict]) -> bool:
    """Every key is in every subscribed host's mirror and programmed there (no other host's
    mirror holds its network)."""
    return all(len(v["sub"]) >= v["nsub"] and len(v["prog"]) >= v["nsub"]
               for v in seen.values())


def last_of(done: list[dict], seen: dict[str, dict], field: str, need) -> tuple[list, int]:
    """Per start, ms from its attach to the last of `field`; and how many were missing."""
    out, missing = [], 0
    for d in done:
        times = seen[d["key"]][field]
        missing += max(0, need(seen[d["key"]]) - len(times))
        if times:
            out.append((max(times) - d["t0"]) * 1e3)
    return out, missing


def propagation(done: list[dict], seen: dict[str, dict]) -> dict:
    """From each start to the last mirror that received it, the last subscribed mirror, the
    last subscribed host with the peer programmed (ms, one sample per start); what never
    arrived."""
    last, miss_all = last_of(done, seen, "all", lambda v: v["nsub"])
    sub, miss_sub = last_of(done, seen, "sub", lambda v: v["nsub"])
    prog, miss_prog = last_of(done, seen, "prog", lambda v: v["nsub"])
    every = [(t - d["t0"]) * 1e3 for d in done for t in seen[d["key"]]["all"]]
    return {"last_host_ms": last, "last_sub_ms": sub, "programmed_ms": prog,
            "every_host_ms": stats.summarize(every), "missing": miss_all,
            "missing_sub": miss_sub, "missing_programmed": miss_prog,
            "subscribed": [seen[d["key"]]["nsub"] for d in done]}


def per_start(c0: dict, c1: dict, starts: int, cpu_s: float, idle_cpu_per_s: float,
              seconds: float, idle_error_cpu_s: float = 0.0) -> dict:
    """etcd's counters over the starts, per start; its CPU net of what it spends anyway
    (leases, keep-alive pings: `idle_cpu_per_s`, measured just before, for as long), and the
    smallest net CPU per start the run resolves (`idle_error_cpu_s`: idle_error())."""
    n = max(1, starts)
    net = max(0.0, cpu_s - idle_cpu_per_s * seconds)
    return {"writes_per_start": (c1["keys_written"] - c0["keys_written"]) / n,
            "write_requests_per_start": (c1["write_requests"] - c0["write_requests"]) / n,
            "etcd_cpu_ms_per_start": net * 1e3 / n,
            "etcd_cpu_ms_per_start_resolution": idle_error_cpu_s * 1e3 / n,
            "etcd_cpu_ms_per_start_gross": cpu_s * 1e3 / n,
            "etcd_idle_cpu_pct": 100 * idle_cpu_per_s,
            "db_mb": c1["db_bytes"] / 2**20, "keys": c1["keys"], "etcd_watchers": c1["watchers"]}


def idle_error(rates: list[float], part_s: float, seconds: float) -> float:
    """How far off, in CPU seconds (two standard deviations), the idle CPU subtracted over a
    window of `seconds` may be, from idle rates measured in consecutive parts of `part_s`
    seconds each: the idle's mean is uncertain, and so is the window's own idle. With
    thousands of leases etcd's idle load (each lease refreshed every cycle) can outweigh the
    starts' CPU by far: a net figure under this is noise."""
    if len(rates) < 2:
        return 0.0
    sd = statistics.stdev(rates)         # CPU s per s, over parts of part_s
    idle_s = part_s * len(rates)
    return 2 * sd * math.sqrt(part_s / idle_s + part_s / max(seconds, part_s)) * seconds


def starts_per_core(cpu_ms_per_start: float) -> float | None:
    """Container starts per second one etcd core carries at this CPU cost per start."""
    return 1000.0 / cpu_ms_per_start if cpu_ms_per_start > 0 else None


def memory_need_mb(step: dict, target: int) -> float:
    """The workers' memory for `target` agents, from a step: each agent's copy holds its
    networks' records (networks of a fixed size, the same endpoints per host) and one record
    a network, so an agent costs about the same at any cluster size."""
    return target * step["worker_rss_mb"] / max(1, step["hosts"])


def busy_cpu(idle0: list[dict], idle1: list[dict], end: list[dict]) -> float:
    """CPU seconds the workers spent between idle1 and end beyond their idle rate (measured
    from idle0 to idle1: leases, timers); each list holds one {"cpu", "t"} per worker."""
    total = 0.0
    for a, b, c in zip(idle0, idle1, end):
        rate = (b["cpu"] - a["cpu"]) / max(1e-9, b["t"] - a["t"])
        total += max(0.0, c["cpu"] - b["cpu"] - rate * (c["t"] - b["t"]))
    return total
