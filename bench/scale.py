"""4. Scale: a sandbox of many hosts (default 20) with several containers each (default 10).

Per round, every host starts its containers at the same time (one API client per host, its
containers one after another), on the default overlay network. Measured from the first start
issued: when every container's /etc/hosts (read through /proc/PID/root) lists every other
container, and when a sample of cross-host pings all succeed. After the last round: each
agent's resident memory. etcd requests per container start come from etcd's /metrics, read
inside the store namespace before and after each round's starts, on this lab and on a 2-host
lab doing the same per host, so the two can be compared.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import subprocess
import threading
import time

from overnet.sandbox.lab import LabError

from .labs import BenchLab, Context, Skip, rss_mb
from .report import Results
from .setup_time import count_delta, etcd_counts

BENCH = "scale"
PINGS = 20


class Tracker:
    """Which containers' /etc/hosts list everybody yet."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.pending: dict[str, int] = {}       # name -> pid
        self.seen: dict[str, tuple] = {}
        self.lock = threading.Lock()

    def add(self, name: str, pid: int) -> None:
        with self.lock:
            self.pending[name] = pid

    def poll(self) -> int:
        with self.lock:
            items = list(self.pending.items())
        for name, pid in items:
            path = f"/proc/{pid}/root/etc/hosts"
            try:
                st = os.stat(path)
                key = (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)
                if self.seen.get(name) == key:
                    continue
                self.seen[name] = key
                with open(path) as f:
                    words = set(f.read().split())
            except OSError:
                continue
            if (self.names - {name}) <= words:
                with self.lock:
                    self.pending.pop(name, None)
        with self.lock:
            return len(self.pending)


def _launch(lab: BenchLab, host: str, names: list[str], tracker: Tracker,
            made: list, errors: list) -> float:
    for name in names:
        c = None
        for attempt in range(3):        # under load a start may time out: retry, count it
            try:
                c = lab.start(host, "multihost", name)
                break
            except Exception as e:
                errors.append(f"{host} {name} (attempt {attempt + 1}): {e}")
                time.sleep(0.5)
        if c is None:
            continue
        made.append((host, c["Id"], name, c["State"]["Pid"], c["NetworkSettings"]["IPAddress"]))
        tracker.add(name, c["State"]["Pid"])
    return time.monotonic()


def _ping_ok(pid: int, ip: str) -> bool:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ping", "-c", "1",
                           "-W", "1", ip], capture_output=True).returncode == 0


def one_round(ctx: Context, lab: BenchLab, r: int, per_host: int) -> dict:
    hosts = [h.name for h in lab.state.hosts]
    plan = {h: [f"s{r}{h.replace('net-', 'h')}c{j}" for j in range(per_host)] for h in hosts}
    names = {n for ns in plan.values() for n in ns}
    tracker = Tracker(names)
    made: list = []
    errors: list = []
    before = etcd_counts(lab)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        futs = [pool.submit(_launch, lab, h, plan[h], tracker, made, errors) for h in hosts]
        while not all(f.done() for f in futs):
            tracker.poll()
            time.sleep(0.05)
        t_launched = max(f.result() for f in futs)
    if not made:
        raise LabError(f"no container could start: {errors[0] if errors else '?'}")
    tracker.names = {m[2] for m in made}     # containers that never started are not awaited
    t_hosts = None
    hosts_deadline = t_launched + max(60.0, 2 * (t_launched - t0))
    while time.monotonic() < hosts_deadline:
        if tracker.poll() == 0:
            t_hosts = time.monotonic()
            break
        time.sleep(0.05)
    if t_hosts is None:
        ctx.progress(BENCH, f"{len(tracker.pending)} /etc/hosts still incomplete after "
                     f"{hosts_deadline - t_launched:.0f}s, e.g. {sorted(tracker.pending)[:3]}")
    # cross-host ping sample
    rnd = random.Random(r)
    pairs = []
    while len(pairs) < min(PINGS, len(made) * (len(made) - 1)):
        a, b = rnd.sample(made, 2)
        if a[0] != b[0]:
            pairs.append((a, b))
    t_pings = None
    pending = list(pairs)
    ping_deadline = time.monotonic() + 30
    while pending and time.monotonic() < ping_deadline:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ok = list(pool.map(lambda p: _ping_ok(p[0][3], p[1][4]), pending))
        pending = [p for p, good in zip(pending, ok) if not good]
        if not pending:
            t_pings = time.monotonic()
    after = etcd_counts(lab)
    return {"made": made, "t0": t0, "launch": t_launched - t0,
            "hosts_done": None if t_hosts is None else t_hosts - t0,
            "hosts_after_launch": None if t_hosts is None else t_hosts - t_launched,
            "pings_done": None if t_pings is None else t_pings - t0,
            "pings_failed": len(pending), "pings": len(pairs),
            "etcd": count_delta(before, after, len(made)) if made else None,
            "pending": tracker.poll() if t_hosts is None else 0,
            "pending_names": sorted(tracker.pending)[:5],
            "failed_pings": [f"{a[2]}@{a[0]} -> {b[2]}@{b[0]} ({b[4]})" for a, b in pending][:5],
            "start_errors": errors, "started": len(made), "planned": len(names)}


def _build(ctx: Context, key: str, hosts: int) -> BenchLab:
    """The lab, with a second try: on a loaded machine an agent can miss its start-up
    deadline (said in the notes when it happens)."""
    try:
        return ctx.overnet_lab(key, hosts=hosts, bench=BENCH)
    except Skip as e:
        ctx.progress(BENCH, f"lab did not come up ({e}); trying once more")
        ctx.failed.clear()
        time.sleep(2)
        lab = ctx.overnet_lab(key, hosts=hosts, bench=BENCH)
        ctx.first_try_failures.append(str(e))
        return lab


def _rounds(ctx: Context, res_: Results, key: str, hosts: int, per_host: int,
            rounds: int) -> tuple[list[dict], BenchLab]:
    """Rounds on a lab of `hosts` hosts; every round after the first gets a fresh lab (cheaper
    than removing every container, and the rounds stay independent). A round is skipped when
    the time budget would not allow it."""
    out: list[dict] = []
    label = f"{hosts}-host lab"
    lab = None
    for r in range(rounds):
        if r > 0:
            left = ctx.time_left()
            need = 1.5 * (out[-1]["launch"] + out[-1]["build"] + 10)
            if left is not None and left < need:
                res_.note(BENCH, f"{label}: round {r + 1}/{rounds} left out: {left:.0f} s of "
                          f"the time budget left, a round takes about {need / 1.5:.0f} s")
                ctx.progress(BENCH, f"{label}: round {r + 1} left out (time budget)")
                break
            ctx.drop(lab.name)
        t = time.monotonic()
        try:
            lab = _build(ctx, key, hosts)
        except Skip as e:
            if r == 0:
                raise
            res_.note(BENCH, f"{label}: round {r + 1}/{rounds} left out: its lab did not come "
                      f"up twice: {e}")
            ctx.progress(BENCH, f"{label}: round {r + 1} left out: {e}")
            break
        build = time.monotonic() - t
        ctx.progress(BENCH, f"{label}: round {r + 1}/{rounds}: starting "
                     f"{len(lab.state.hosts)}×{per_host} containers")
        res = one_round(ctx, lab, r, per_host)
        res["build"] = build
        res["rss"] = [rss_mb(h.agent_pid) for h in lab.state.hosts]
        res["kernel"] = kernel_state(lab, res["made"])
        out.append(res)
        if res["start_errors"]:
            res_.note(BENCH, f"{label}: round {r + 1}: {len(res['start_errors'])} start "
                      f"attempt(s) failed and were retried, {res['planned'] - res['started']} "
                      f"container(s) never started; first error: {res['start_errors'][0]}")
        ctx.progress(BENCH, f"{label}: round {r + 1}/{rounds}: launched in "
                     f"{res['launch']:.1f}s, every /etc/hosts complete at "
                     f"{_s(res['hosts_done'])} ({_s(res['hosts_after_launch'])} after the "
                     f"last start returned), {res['pings'] - res['pings_failed']}/"
                     f"{res['pings']} pings ok at {_s(res['pings_done'])}; etcd keys written "
                     f"per start {res['etcd']['keys_written']:.2f}")
    return out, lab


def run(ctx: Context, res: Results) -> None:
    cfg = ctx.cfg
    per_host, rounds = cfg.scale_per_host, cfg.scale_rounds
    small_rounds, small = _rounds(ctx, res, "scale2", 2, per_host, max(2, rounds))
    ctx.drop(small.name)
    big_rounds, big = _rounds(ctx, res, "scale", cfg.scale_hosts, per_host, rounds)
    n_hosts = cfg.scale_hosts
    rss = [m for r in big_rounds for m in r["rss"]]
    n = n_hosts * per_host
    tag = f"{n_hosts} hosts × {per_host}"
    res.add_figure("scale.launch", BENCH, f"all starts issued and returned ({tag})", "ms",
                   [r["launch"] * 1e3 for r in big_rounds])
    res.add_figure("scale.hosts_done", BENCH, f"every /etc/hosts lists all {n} containers, "
                   "from the first start", "ms",
                   [_ms(r["hosts_done"]) for r in big_rounds])
    res.add_figure("scale.hosts_after_launch", BENCH, "every /etc/hosts complete, after the "
                   "last start returned", "ms",
                   [_ms(r["hosts_after_launch"]) for r in big_rounds])
    res.add_figure("scale.pings_done", BENCH, f"{PINGS} sampled cross-host pings all "
                   "succeed, from the first start", "ms",
                   [_ms(r["pings_done"]) for r in big_rounds])
    res.add_figure("scale.agent_rss", BENCH, f"agent resident memory, {n} containers "
                   f"running (one sample per agent and round)", "MB", rss)
    for key, label in (("keys_written", "etcd keys written (mvcc put + delete)"),
                       ("revision", "etcd revisions (write transactions)"),
                       ("requests", "etcd unary requests"),
                       ("writes_requests", "etcd write requests (Put, Txn, DeleteRange)")):
        res.add_figure(f"scale.etcd.{key}.big", BENCH, f"{label} per container start, "
                       f"{n_hosts} hosts", "count",
                       [r["etcd"][key] for r in big_rounds if r["etcd"]])
        res.add_figure(f"scale.etcd.{key}.small", BENCH, f"{label} per container start, "
                       "2 hosts", "count", [r["etcd"][key] for r in small_rounds if r["etcd"]])
    kernel = [k for r in big_rounds for k in r.get("kernel", [])]
    res.add_figure("scale.fdb_per_remote", BENCH, "vxlan FDB entries per endpoint on other "
                   "hosts (1.0: exactly one each; one sample per host and round)", "ratio",
                   [k["fdb"] / k["remote"] for k in kernel if k["remote"]])
    res.add_figure("scale.neigh_per_remote", BENCH, "vxlan neighbour entries per endpoint on "
                   "other hosts", "ratio",
                   [k["neigh"] / k["remote"] for k in kernel if k["remote"]])
    res.add_absolute("scale.names_after_launch", BENCH, "every /etc/hosts complete after the "
                     "last start returned (slowest round)", "scale.hosts_after_launch", "max",
                     "<=", 5000)
    res.add_absolute("scale.rss_max", BENCH, "agent RSS, largest agent", "scale.agent_rss",
                     "max", "<=", 60)
    res.add_absolute("scale.etcd_writes", BENCH, f"etcd keys written per container start, "
                     f"{n_hosts} hosts (median of rounds)", "scale.etcd.keys_written.big",
                     "median", "<=", 4)
    res.add_ratio("scale.etcd_hosts_independent", BENCH,
                  f"etcd keys written per start, {n_hosts} hosts / 2 hosts (≈1: independent "
                  "of hosts)", "scale.etcd.keys_written.big", "scale.etcd.keys_written.small",
                  "<=", 1.1, paired=False)
    res.add_ratio("scale.etcd_requests_independent", BENCH,
                  f"etcd requests per start, {n_hosts} hosts / 2 hosts",
                  "scale.etcd.requests.big", "scale.etcd.requests.small", paired=False)
    for e in ctx.first_try_failures:
        res.note(BENCH, f"a lab needed a second try to come up: {e}")
    failed = [r for r in big_rounds if r["hosts_done"] is None or r["pings_failed"]]
    res.add_figure("scale.started", BENCH, f"containers started of {n} planned", "count",
                   [r["started"] for r in big_rounds])
    for r in failed:
        res.note(BENCH, f"a round did not converge: {r['pending']} hosts file(s) incomplete "
                 f"{r['pending_names']}, {r['pings_failed']} ping(s) failing "
                 f"{r['failed_pings']}")
    res.note(BENCH, f"{n_hosts} hosts × {per_host} containers, {rounds} round(s); the etcd "
             f"reference is a 2-host lab starting {per_host} containers per host the same way")


def kernel_state(lab: BenchLab, made: list) -> list[dict]:
    """Per host: FDB and neighbour entries on the network's vxlan0 against the endpoints on
    the other hosts (what each should hold: one of each per remote endpoint, no more)."""
    net_id = lab.api(lab.state.hosts[0].name).get("/networks/multihost")["id"]
    out = []
    for h in lab.state.hosts:
        path = f"{h.run_dir}/overnet/netns/{net_id[:12]}"
        fdb = subprocess.run(["nsenter", f"--net={path}", "bridge", "fdb", "show", "dev",
                              "vxlan0"], capture_output=True, text=True, check=False).stdout
        neigh = subprocess.run(["nsenter", f"--net={path}", "ip", "neigh", "show", "dev",
                                "vxlan0"], capture_output=True, text=True, check=False).stdout
        out.append({"host": h.name, "remote": sum(1 for m in made if m[0] != h.name),
                    "fdb": sum(1 for line in fdb.splitlines() if " dst " in line),
                    "neigh": len(neigh.splitlines())})
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f}s"
