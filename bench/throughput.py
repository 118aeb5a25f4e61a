"""1. Throughput: iperf3 TCP, 1 and 4 streams, between two namespace hosts on one underlay
bridge, for the underlay itself and for container-to-container paths; every path measured in
every round, rounds interleaved, so drift of the machine hits all paths alike.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field

from overnet.sandbox.lab import LabError

from .dockerlab import IMAGE
from .labs import FLANNEL_NETWORK, Context, Skip, flannel_support, netns_of
from .report import Results

BENCH = "throughput"
PORT = 5201
STREAMS = (1, 4)


@dataclass
class Path:
    key: str
    label: str
    client_ns: str          # network namespace file the client runs in
    server_ns: str
    server_ip: str
    server: subprocess.Popen | None = None
    samples: dict = field(default_factory=lambda: {n: [] for n in STREAMS})


def _nsenter(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={ns}", "--", *argv]


def _ping(ns: str, ip: str, tries: int = 20) -> bool:
    for _ in range(tries):
        if subprocess.run(_nsenter(ns, "ping", "-c", "1", "-W", "1", ip),
                          capture_output=True).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def _start_server(p: Path) -> None:
    p.server = subprocess.Popen(_nsenter(p.server_ns, "iperf3", "-s", "-p", str(PORT)),
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


def iperf(p: Path, streams: int, duration: int, omit: int) -> float:
    """Gbit/s received, one test."""
    argv = _nsenter(p.client_ns, "iperf3", "-c", p.server_ip, "-p", str(PORT), "-t",
                    str(duration), "-P", str(streams), "-J", "--connect-timeout", "3000")
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
            return data["end"]["sum_received"]["bits_per_second"] / 1e9
        last = data["error"]
        time.sleep(0.3)
    raise LabError(f"iperf3 {p.key}: {last}")


def _overnet_paths(ctx: Context, res: Results) -> list[Path]:
    lab = ctx.overnet_lab("main", bench=BENCH)
    h1, h2 = lab.host("net-1"), lab.host("net-2")
    paths = [Path("underlay", "underlay, host to host", f"/run/netns/{h1.netns}",
                  f"/run/netns/{h2.netns}", h2.address)]
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
    ready = []
    for p in paths:
        if _ping(p.client_ns, p.server_ip):
            ready.append(p)
        else:
            res.skip(BENCH, p.label, f"{p.server_ip} does not answer ping from the client side")
            ctx.progress(BENCH, f"{p.label}: skipped: no ping to {p.server_ip}")
    try:
        for p in ready:
            _start_server(p)
        time.sleep(0.3)
        total = cfg.reps * len(ready) * len(STREAMS)
        done = 0
        for rep in range(cfg.reps):
            for p in ready:
                for n in STREAMS:
                    done += 1
                    try:
                        g = iperf(p, n, cfg.duration, cfg.omit)
                    except (LabError, subprocess.TimeoutExpired) as e:
                        ctx.progress(BENCH, f"{p.key} P{n}: failed: {e}")
                        g = None
                    p.samples[n].append(g)
                    ctx.progress(BENCH, f"round {rep + 1}/{cfg.reps} [{done}/{total}] "
                                 f"{p.key:<15} {n} stream(s): "
                                 + (f"{g:6.2f} Gbit/s" if g is not None else "failed"))
    finally:
        for p in ready:
            _stop_server(p)
    for p in ready:
        for n in STREAMS:
            res.add_figure(f"tput.{p.key}.p{n}", BENCH, f"{p.label}, {n} stream(s)", "Gbit/s",
                           p.samples[n])
    for n in STREAMS:
        u = f"tput.underlay.p{n}"
        res.add_ratio(f"tput.overlay_vs_underlay.p{n}", BENCH,
                      f"overnet overlay / underlay, {n} stream(s)", f"tput.overlay.p{n}", u,
                      ">=", 0.85)
        res.add_ratio(f"tput.overlay_vs_docker.p{n}", BENCH,
                      f"overnet overlay / Docker overlay, {n} stream(s)", f"tput.overlay.p{n}",
                      f"tput.docker.p{n}", ">=", 1.0)
        res.add_ratio(f"tput.hostgw_vs_underlay.p{n}", BENCH,
                      f"flannel host-gw / underlay, {n} stream(s)", f"tput.flannel-host-gw.p{n}",
                      u, ">=", 0.95)
        res.add_ratio(f"tput.fvxlan_vs_underlay.p{n}", BENCH,
                      f"flannel vxlan / underlay, {n} stream(s)", f"tput.flannel-vxlan.p{n}", u)
        res.add_ratio(f"tput.samehost_vs_underlay.p{n}", BENCH,
                      f"overnet same host / underlay, {n} stream(s)", f"tput.samehost.p{n}", u)
        res.add_ratio(f"tput.docker_vs_underlay.p{n}", BENCH,
                      f"Docker overlay / underlay, {n} stream(s)", f"tput.docker.p{n}", u)
    res.note(BENCH, f"iperf3 TCP, {cfg.duration} s per test"
             + (f" after {cfg.omit} s omitted" if cfg.omit else "")
             + f", {cfg.reps} interleaved rounds; the client sends; underlay MTU 1500, "
             "overlay MTU 1450")
