"""1. Throughput: iperf3 TCP, 1 and 4 streams, between two namespace hosts on one underlay
bridge, for the underlay itself, a bare kernel VXLAN device (the ceiling of any VXLAN overlay)
and container-to-container paths; every path measured in every round, rounds interleaved (each
round starting at the next path), so drift of the machine hits all paths alike. iperf3's client
and server are pinned to different CPUs and every path is warmed up once before the rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field

from overnet.sandbox.lab import LabError

from .dockerlab import IMAGE
from .labs import FLANNEL_NETWORK, BenchLab, Context, Skip, flannel_support, netns_of
from .report import Results

BENCH = "throughput"
PORT = 5201
STREAMS = (1, 4)
RAW_VNI, RAW_PORT, RAW_NET = 4242, 4790, "10.244.42"    # the bare VXLAN reference
PAIR_NET, OVERLAY_MTU = "10.244.43", 1450                 # the bare veth pair reference


@dataclass
class Path:
    key: str
    label: str
    client_ns: str          # network namespace file the client runs in
    server_ns: str
    server_ip: str
    server: subprocess.Popen | None = None
    samples: dict = field(default_factory=dict)     # streams -> Gbit/s per round
    # streams -> Gbit per CPU-second of iperf3's client and server (process time, which
    # includes the softirq work done in their context): the cost of the path per byte,
    # far less sensitive than Gbit/s to how much CPU other workloads leave us.
    per_cpu: dict = field(default_factory=dict)


def pinning() -> tuple[str, str] | None:
    """CPUs for iperf3's client and server: the first two this process may use, so sender and
    receiver never share a CPU and never migrate; None on a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return (str(cpus[0]), str(cpus[1])) if len(cpus) >= 2 else None


def _nsenter(ns: str, *argv: str, cpu: str | None = None) -> list[str]:
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    return [*pin, "nsenter", f"--net={ns}", "--", *argv]


def _ping(ns: str, ip: str, tries: int = 20) -> bool:
    for _ in range(tries):
        if subprocess.run(_nsenter(ns, "ping", "-c", "1", "-W", "1", ip),
                          capture_output=True).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def _start_server(p: Path) -> None:
    pin = pinning()
    p.server = subprocess.Popen(_nsenter(p.server_ns, "iperf3", "-s", "-p", str(PORT),
                                         cpu=pin[1] if pin else None),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)


def _stop_server(p: Path) -> None:
    if p.server is not None and p.server.poll() is None:
        p.server.terminate()
        try:
            p.server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.server.kill()
            p.server.wait()


def iperf(p: Path, streams: int, duration: int, omit: int) -> tuple[float, float | None]:
    """Gbit/s received, one test, and Gbit per CPU-second of client + server."""
    pin = pinning()
    argv = _nsenter(p.client_ns, "iperf3", "-c", p.server_ip, "-p", str(PORT), "-t",
                    str(duration), "-P", str(streams), "-J", "--connect-timeout", "3000",
                    cpu=pin[0] if pin else None)
    if omit:
        argv += ["-O", str(omit)]
    last = ""
    for _ in range(3):   # the server may not listen yet, or is finishing the previous test
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=duration + omit + 30)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = {"error": proc.stderr.strip() or proc.stdout.strip()[:200]}
        if "error" not in data:
            gbps = data["end"]["sum_received"]["bits_per_second"] / 1e9
            cpu = data["end"].get("cpu_utilization_percent", {})
            busy = (cpu.get("host_total", 0) + cpu.get("remote_total", 0)) / 100
            return gbps, (gbps / busy if busy > 0 else None)
        last = data["error"]
        time.sleep(0.3)
    raise LabError(f"iperf3 {p.key}: {last}")


def raw_vxlan(lab: BenchLab, hosts: tuple[str, str] = ("net-1", "net-2"), mtu: int = 0
              ) -> Path:
    """Two namespaces joined by a bare vxlan device each (no bridge, no veth, no overnet) on the
    lab's underlay: the ceiling any VXLAN overlay can reach here. The namespaces are pinned in
    the lab hosts' private /run, so they go with the lab."""
    ends = []
    for i, (name, peer) in enumerate((hosts, hosts[::-1])):
        me, other = lab.host(name), lab.host(peer)
        mtu_arg = f"mtu {mtu}" if mtu else ""
        script = f"""set -e
ip netns add rawvx
ip link add rawvx type vxlan id {RAW_VNI} local {me.address} remote {other.address} \
    dstport {RAW_PORT} dev eth0
ip link set rawvx netns rawvx
ip -n rawvx link set rawvx {mtu_arg} up
ip -n rawvx addr add {RAW_NET}.{i + 1}/24 dev rawvx
ip -n rawvx link set lo up"""
        proc = lab.run(name, ["sh", "-c", script])
        if proc.returncode != 0:
            raise LabError(f"raw vxlan on {name}: {proc.stderr.strip()}")
        ends.append(me.run_dir + "/netns/rawvx")
    return Path("rawvxlan", "bare kernel VXLAN, across hosts", ends[0], ends[1],
                f"{RAW_NET}.2")


def veth_pair(lab: BenchLab, host: str = "net-1") -> Path:
    """Two namespaces on one host joined by a bare veth pair with the overlay's MTU: the
    ceiling of any path between two containers of one host (the underlay crosses the lab's
    switch between two hosts, a different path). Pinned in the host's private /run."""
    script = f"""set -e
ip netns add pairA
ip netns add pairB
ip link add e0 netns pairA type veth peer name e0 netns pairB
for n in A B; do
    ip -n pair$n link set lo up
    ip -n pair$n link set e0 mtu {OVERLAY_MTU} up
done
ip -n pairA addr add {PAIR_NET}.1/24 dev e0
ip -n pairB addr add {PAIR_NET}.2/24 dev e0"""
    proc = lab.run(host, ["sh", "-c", script])
    if proc.returncode != 0:
        raise LabError(f"veth pair on {host}: {proc.stderr.strip()}")
    run = lab.host(host).run_dir
    return Path("vethpair", "bare veth pair, same host", f"{run}/netns/pairA",
                f"{run}/netns/pairB", f"{PAIR_NET}.2")


def _overnet_paths(ctx: Context, res: Results) -> list[Path]:
    lab = ctx.overnet_lab("main", bench=BENCH)
    h1, h2 = lab.host("net-1"), lab.host("net-2")
    paths = [Path("underlay", "underlay, host to host", f"/run/netns/{h1.netns}",
                  f"/run/netns/{h2.netns}", h2.address)]
    for what, make in (("bare kernel VXLAN", raw_vxlan), ("bare veth pair", veth_pair)):
        try:
            paths.append(make(lab))
        except LabError as e:
            res.skip(BENCH, what, str(e))
            ctx.progress(BENCH, f"{what}: skipped: {e}")
    lab.ensure_network("net-1", "tput")
    a = lab.start("net-1", "tput", "tput-a")
    b = lab.start("net-2", "tput", "tput-b")
    c = lab.start("net-1", "tput", "tput-c")
    paths.append(Path("overlay", "overnet overlay, across hosts", netns_of(a["State"]["Pid"]),
                      netns_of(b["State"]["Pid"]), b["NetworkSettings"]["IPAddress"]))
    paths.append(Path("samehost", "overnet overlay, same host", netns_of(a["State"]["Pid"]),
                      netns_of(c["State"]["Pid"]), c["NetworkSettings"]["IPAddress"]))
    return paths


def _flannel_path(ctx: Context, res: Results, backend: str) -> Path | None:
    key = {"vxlan": "fvx", "host-gw": "fhg"}[backend]
    what = f"overnet flannel {backend}, across hosts"
    why = flannel_support()
    if why:
        res.skip(BENCH, what, why)
        ctx.progress(BENCH, f"{what}: skipped: {why}")
        return None
    try:
        lab = ctx.overnet_lab(key, flannel={"flannel-network": FLANNEL_NETWORK,
                                            "flannel-backend": backend}, bench=BENCH)
        a = lab.start("net-1", "bridge", f"fl-{key}-a")
        b = lab.start("net-2", "bridge", f"fl-{key}-b")
    except (Skip, LabError) as e:
        res.skip(BENCH, what, str(e))
        ctx.progress(BENCH, f"{what}: skipped: {e}")
        return None
    except Exception as e:   # an API error from a half-finished feature: say so, go on
        res.skip(BENCH, what, f"{type(e).__name__}: {e}")
        ctx.progress(BENCH, f"{what}: skipped: {e}")
        return None
    return Path(f"flannel-{backend}", what, netns_of(a["State"]["Pid"]),
                netns_of(b["State"]["Pid"]), b["NetworkSettings"]["IPAddress"])


def _docker_path(ctx: Context, res: Results) -> Path | None:
    what = "Docker overlay, across hosts"
    try:
        dl = ctx.docker_lab(BENCH)
        for host, name in (("net-1", "tput-da"), ("net-2", "tput-db")):
            if dl.docker(host, "inspect", name, check=False).returncode != 0:
                dl.docker(host, "run", "-d", "--net", "benchov", "--name", name, IMAGE,
                          "sleep", "1000000")
        pa, pb = dl.pid("net-1", "tput-da"), dl.pid("net-2", "tput-db")
        ip = dl.out("net-2", "inspect", "-f",
                    "{{(index .NetworkSettings.Networks \"benchov\").IPAddress}}", "tput-db")
    except Skip as e:
        res.skip(BENCH, what, str(e))
        ctx.progress(BENCH, f"{what}: skipped: {e}")
        return None
    except LabError as e:
        res.skip(BENCH, what, f"Docker could not run: {e}")
        ctx.progress(BENCH, f"{what}: skipped: {e}")
        return None
    return Path("docker", what, netns_of(pa), netns_of(pb), ip)


def test_seconds(cfg) -> str:
    """How long each test runs, in words: '2 s (1 stream) and 5 s (4 streams)'."""
    return " and ".join(f"{cfg.seconds(n)} s ({n} stream{'s' if n > 1 else ''})"
                        for n in STREAMS)


def ready_paths(ctx: Context, res: Results, paths: list[Path]) -> list[Path]:
    ready = []
    for p in paths:
        if _ping(p.client_ns, p.server_ip):
            ready.append(p)
        else:
            res.skip(BENCH, p.label, f"{p.server_ip} does not answer ping from the client side")
            ctx.progress(BENCH, f"{p.label}: skipped: no ping to {p.server_ip}")
    return ready


def _one(ctx: Context, p: Path, n: int, duration: int, omit: int, tag: str
         ) -> tuple[float | None, float | None]:
    try:
        g, eff = iperf(p, n, duration, omit)
    except (LabError, subprocess.TimeoutExpired) as e:
        ctx.progress(BENCH, f"{p.key} P{n}: failed: {e}")
        return None, None
    ctx.progress(BENCH, f"{tag} {p.key:<15} {n} stream(s): {g:6.2f} Gbit/s"
                 + (f", {eff:5.2f} Gbit/CPU-s" if eff else ""))
    return g, eff


def measure(ctx: Context, paths: list[Path], streams: tuple[int, ...] = STREAMS,
            between=None) -> None:
    """Every path in every round (samples appended to path.samples), after one unrecorded
    warm-up test per path; round r starts at path r (mod the number of paths), so no path
    always runs right after the same one; ctx.cfg gives the rounds and each test's seconds.
    `between(path)`, if given, runs before each test
    (the tuning benchmark switches a lever there)."""
    servers: dict[tuple[str, str], Path] = {}
    try:
        for p in paths:            # paths to the same server share it
            owner = servers.setdefault((p.server_ns, p.server_ip), p)
            if owner is p:
                _start_server(p)
        time.sleep(0.3)
        for p in paths:            # warm-up: caches, ARP/FDB, TCP metrics, CPU frequency
            if between:
                between(p)
            _one(ctx, p, max(streams), 1, 0, "warm-up")
        cfg = ctx.cfg
        reps = cfg.reps
        total, done = reps * len(paths) * len(streams), 0
        for rep in range(reps):
            order = paths[rep % len(paths):] + paths[:rep % len(paths)]
            for p in order:
                for n in streams:
                    done += 1
                    if between:
                        between(p)
                    g, eff = _one(ctx, p, n, cfg.seconds(n), cfg.omit,
                                  f"round {rep + 1}/{reps} [{done}/{total}]")
                    p.samples.setdefault(n, []).append(g)
                    p.per_cpu.setdefault(n, []).append(eff)
    finally:
        for p in servers.values():
            _stop_server(p)


TARGETS = (  # id, label, numerator, denominator, op, target
    ("overlay_vs_rawvxlan", "overnet overlay / bare kernel VXLAN", "overlay", "rawvxlan",
     ">=", 0.95),
    ("overlay_vs_docker", "overnet overlay / Docker overlay", "overlay", "docker", ">=", 1.10),
    ("hostgw_vs_underlay", "flannel host-gw / underlay", "flannel-host-gw", "underlay",
     ">=", 0.97),
    ("overlay_vs_underlay", "overnet overlay / underlay", "overlay", "underlay", None, None),
    ("rawvxlan_vs_underlay", "bare kernel VXLAN / underlay", "rawvxlan", "underlay",
     None, None),
    ("fvxlan_vs_rawvxlan", "flannel vxlan / bare kernel VXLAN", "flannel-vxlan", "rawvxlan",
     None, None),
    ("samehost_vs_vethpair", "overnet same host / bare veth pair, same host", "samehost",
     "vethpair", None, None),
    ("rawvxlan_vs_docker", "bare kernel VXLAN / Docker overlay", "rawvxlan", "docker",
     None, None),
)
CEILINGS = {"overlay_vs_docker": "rawvxlan_vs_docker"}   # target ratio -> its ceiling


def run(ctx: Context, res: Results) -> None:
    cfg = ctx.cfg
    paths = _overnet_paths(ctx, res)
    for backend in ("vxlan", "host-gw"):
        p = _flannel_path(ctx, res, backend)
        if p:
            paths.append(p)
    p = _docker_path(ctx, res)
    if p:
        paths.append(p)
    ready = ready_paths(ctx, res, paths)
    measure(ctx, ready)
    for p in ready:
        for n in STREAMS:
            res.add_figure(f"tput.{p.key}.p{n}", BENCH, f"{p.label}, {n} stream(s)", "Gbit/s",
                           p.samples.get(n, []))
            res.add_figure(f"tput.{p.key}.p{n}.cpu", BENCH, f"{p.label}, {n} stream(s), per "
                           "CPU-second of iperf3", "Gbit/CPU-s", p.per_cpu.get(n, []))
    for n in STREAMS:
        for rid, label, num, den, op, target in TARGETS:
            top = CEILINGS.get(rid)
            res.add_ratio(f"tput.{rid}.p{n}", BENCH, f"{label}, {n} stream(s)",
                          f"tput.{num}.p{n}", f"tput.{den}.p{n}", op, target,
                          ceiling=f"tput.{top}.p{n}" if top else None)
        for rid, label, num, den, _, _ in TARGETS[:3]:
            res.add_ratio(f"tput.{rid}.p{n}.cpu", BENCH, f"{label}, {n} stream(s), Gbit per "
                          "CPU-second", f"tput.{num}.p{n}.cpu", f"tput.{den}.p{n}.cpu")
    pin = pinning()
    res.note(BENCH, f"iperf3 TCP, {test_seconds(cfg)} per test"
             + (f" after {cfg.omit} s omitted" if cfg.omit else "")
             + f", {cfg.reps} interleaved rounds after one warm-up test per path; "
             + (f"client pinned to CPU {pin[0]}, server to CPU {pin[1]}; " if pin else "")
             + "the client sends; underlay MTU 1500, overlay MTU 1450")
