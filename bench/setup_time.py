"""3. Network set-up time: how long a new container's network takes.

overnet, per container (N of them, one after another, on host net-1 of a 2-host lab):
  - agent side: Agent._connect (namespace, address, store records, interface, routes, peers and
    hosts files), timed inside the agent and returned as NetworkSetupSeconds;
  - end to end: the wall time of `overnet run -d`.
Interleaved with it, on the same host: the reference CNI `bridge` plugin with `host-local` IPAM,
ADD invoked as a runtime does (the runtime's own `ip netns add` timed apart).
Then Docker: `docker run -d --net <overlay>` and `docker run -d --net none` alternating with
`overnet run -d`; Docker's share spent on the overlay network is the difference.
etcd requests per container start are counted from etcd's /metrics around the overnet starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from overnet.sandbox.lab import LabError

from . import stats
from .dockerlab import IMAGE
from .labs import CNI_HELPER, BenchLab, Context, LineProcess, Skip
from .report import Results

BENCH = "setup"


def etcd_counts(lab: BenchLab) -> dict[str, float]:
    m = stats.parse_prometheus(lab.etcd_metrics())
    unary = ("Range", "Put", "DeleteRange", "Txn", "Compact", "LeaseGrant", "LeaseRevoke")
    return {
        "keys_written": stats.metric_sum(m, "etcd_mvcc_put_total")
        + stats.metric_sum(m, "etcd_mvcc_delete_total"),
        "revision": stats.metric_sum(m, "etcd_debugging_mvcc_current_revision"),
        "requests": sum(stats.metric_sum(m, "grpc_server_handled_total", grpc_method=u)
                        for u in unary),
        "writes_requests": sum(stats.metric_sum(m, "grpc_server_handled_total", grpc_method=u)
                               for u in ("Put", "DeleteRange", "Txn")),
    }


def count_delta(before: dict, after: dict, n: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / n for k in before}


def _run_timed(argv: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    dt = time.monotonic() - t0
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv[-6:])}: {proc.stderr.strip()}")
    return dt, proc.stdout.strip().splitlines()[-1]


def overnet_vs_cni(ctx: Context, res: Results, lab: BenchLab) -> None:
    n = ctx.cfg.setup_n
    argv, env = lab.ssh_argv("net-1", [sys.executable, CNI_HELPER, "--data-dir",
                                       os.path.join(lab.dir, "net-1", "cni")])
    cni = LineProcess(argv, env)
    made: list[str] = []
    e2e, agent, attach, add, netns_t = [], [], [], [], []
    counts = {"keys_written": [], "revision": [], "requests": [], "writes_requests": []}
    batch = max(1, n // 10)
    have_hook = True
    try:
        cni.expect("ready", 30)
        before = etcd_counts(lab)
        in_batch = 0
        for i in range(n):
            dt, cid = _run_timed(lab.cli_argv("net-1") + ["run", "-d", "--name", f"st{i}",
                                                         "sleep", "infinity"])
            made.append(cid)
            c = lab.api("net-1").get(f"/containers/{cid}")
            a = c["NetworkSettings"].get("NetworkSetupSeconds")
            at = c["NetworkSettings"].get("NetworkAttachSeconds")
            have_hook = have_hook and "NetworkSetupSeconds" in c["NetworkSettings"]
            in_batch += 1
            if in_batch == batch or i == n - 1:
                after = etcd_counts(lab)
                for k, v in count_delta(before, after, in_batch).items():
                    counts[k].append(v)
                before, in_batch = etcd_counts(lab), 0
            cni.send(f"add {i}")
            r = json.loads(cni.expect("result", 60))
            e2e.append(dt * 1e3)
            agent.append(None if a is None else a * 1e3)
            attach.append(None if at is None else at * 1e3)
            add.append(r["add"] * 1e3)
            netns_t.append(r["netns"] * 1e3)
            if (i + 1) % max(1, n // 5) == 0 or i == n - 1:
                ctx.progress(BENCH, f"container {i + 1}/{n}: overnet run -d {dt * 1e3:.0f} ms, "
                             f"agent {_ms(a)} ms, CNI ADD {r['add'] * 1e3:.1f} ms")
    finally:
        cni.close()
        # Removing them one by one would take long: the lab goes instead (run() drops it).
    res.add_figure("setup.overnet.agent", BENCH, "overnet agent-side network set-up "
                   "(Agent._connect)", "ms", agent)
    res.add_figure("setup.overnet.attach", BENCH, "of which the endpoint's attach (address, "
                   "interface, routes, peers, records: what a CNI ADD does)", "ms", attach)
    res.add_figure("setup.cni.add", BENCH, "CNI bridge + host-local ADD", "ms", add)
    res.add_figure("setup.cni.netns", BENCH, "runtime's `ip netns add` before CNI ADD", "ms",
                   netns_t)
    res.add_figure("setup.cni.netns_add", BENCH, "runtime's `ip netns add` + CNI ADD", "ms",
                   [None if a is None else a + b for a, b in zip(add, netns_t)])
    res.add_figure("setup.overnet.run", BENCH, f"overnet `run -d` end to end ({n} in a row)",
                   "ms", e2e)
    if not have_hook:
        res.skip(BENCH, "overnet agent-side set-up", "the agent does not report "
                 "NetworkSetupSeconds (src/overnet/api/server.py container_json)")
    res.add_ratio("setup.attach_vs_cni", BENCH, "overnet endpoint attach / CNI ADD",
                  "setup.overnet.attach", "setup.cni.add", "<=", 0.7)
    res.add_ratio("setup.agent_vs_cni", BENCH, "overnet agent-side set-up (namespace + "
                  "attach) / `ip netns add` + CNI ADD", "setup.overnet.agent",
                  "setup.cni.netns_add")
    labels = {"keys_written": "etcd keys written (mvcc put + delete)",
              "revision": "etcd revisions (write transactions)",
              "requests": "etcd unary requests (Range, Put, Txn, DeleteRange, Lease…)",
              "writes_requests": "etcd write requests (Put, Txn, DeleteRange)"}
    for k, label in labels.items():
        res.add_figure(f"setup.etcd.{k}", BENCH, f"{label} per container start, 2 hosts",
                       "count", counts[k])
    res.note(BENCH, f"{n} overnet containers started one after another on one host (default "
             f"overlay network), each followed by one CNI ADD; etcd counted per batch of "
             f"{batch} starts")


def docker_share(ctx: Context, res: Results, lab: BenchLab) -> None:
    m = ctx.cfg.docker_runs
    try:
        dl = ctx.docker_lab(BENCH)
    except Skip as e:
        res.skip(BENCH, "Docker run -d", str(e))
        ctx.progress(BENCH, f"Docker: skipped: {e}")
        return
    ov, none, on = [], [], []
    for i in range(m):
        for net, out in (("benchov", ov), ("none", none)):
            dt, cid = _run_timed(dl.docker_argv("net-1") + ["run", "-d", "--net", net, IMAGE,
                                                            "sleep", "1000000"])
            out.append(dt * 1e3)
            dl.docker("net-1", "rm", "-f", cid, check=False)
        dt, cid = _run_timed(lab.cli_argv("net-1") + ["run", "-d", "sleep", "infinity"])
        on.append(dt * 1e3)
        lab.remove("net-1", cid)
        ctx.progress(BENCH, f"round {i + 1}/{m}: docker run -d overlay {ov[-1]:.0f} ms, "
                     f"--net none {none[-1]:.0f} ms; overnet run -d {on[-1]:.0f} ms")
    res.add_figure("setup.docker.overlay", BENCH, "docker run -d --net <overlay>", "ms", ov)
    res.add_figure("setup.docker.none", BENCH, "docker run -d --net none", "ms", none)
    res.add_figure("setup.docker.share", BENCH, "Docker's overlay share of run -d "
                   "(overlay − none, per round)", "ms", [a - b for a, b in zip(ov, none)])
    res.add_figure("setup.overnet.run_vs_docker", BENCH, "overnet run -d (alternating with "
                   "docker run)", "ms", on)
    res.add_ratio("setup.run_vs_docker", BENCH, "overnet run -d / docker run -d on the overlay",
                  "setup.overnet.run_vs_docker", "setup.docker.overlay", "<=", 0.25)
    res.add_ratio("setup.agent_vs_docker_share", BENCH,
                  "overnet agent-side set-up / Docker's overlay share",
                  "setup.overnet.agent", "setup.docker.share", paired=False)


def cli_entry(ctx: Context, res: Results, lab: BenchLab) -> None:
    """`overnet run -d` through the `overnet` executable (the lean entry: the compiled front,
    cfront/overnet.c, when set-up had a C compiler, else cli/fast.py) and through the click
    CLI (cli/main.py), alternating: what the lean entry path saves."""
    m = ctx.cfg.docker_runs
    click_argv = [sys.executable, "-c", "from overnet.cli.main import main; main()",
                  "-H", "unix://" + lab.host("net-1").socket]
    lean, full = [], []
    for _ in range(m):
        for argv, out in ((lab.cli_argv("net-1"), lean), (click_argv, full)):
            dt, cid = _run_timed(argv + ["run", "-d", "sleep", "infinity"])
            out.append(dt * 1e3)
            lab.remove("net-1", cid)
    ctx.progress(BENCH, f"overnet run -d: lean entry {stats.median(lean):.0f} ms, click "
                 f"{stats.median(full):.0f} ms (medians of {m})")
    res.add_figure("setup.cli.lean", BENCH, "overnet run -d, lean entry (cli/fast.py)", "ms",
                   lean)
    res.add_figure("setup.cli.click", BENCH, "overnet run -d, click CLI (cli/main.py)", "ms",
                   full)
    res.add_ratio("setup.cli.lean_vs_click", BENCH, "overnet run -d: lean entry / click CLI",
                  "setup.cli.lean", "setup.cli.click")


def run(ctx: Context, res: Results) -> None:
    lab = ctx.overnet_lab("main", bench=BENCH)
    try:
        docker_share(ctx, res, lab)         # first: net-1 holds no container of its network
        cli_entry(ctx, res, lab)
        overnet_vs_cni(ctx, res, lab)
    finally:
        ctx.drop(lab.name)                  # with its containers: a later benchmark gets a
                                            # fresh lab


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1e3:.1f}"
