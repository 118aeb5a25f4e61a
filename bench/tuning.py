"""Data-plane levers, measured: does a kernel setting bring overnet's overlay closer to a bare
kernel VXLAN device?

`python -m bench tuning` builds the 2-host lab with two overlay containers and the bare VXLAN
pair, then for each lever measures, in the same rounds, the overlay with the lever off, with it
on (the lever is switched right before each test) and the bare VXLAN reference. Reported per
lever: on/off and on/raw VXLAN, each a median of per-round ratios with its 95 % CI. The jumbo
lever builds a second lab whose underlay links have MTU 9000 (overnet derives 8950 for the
overlay) and compares it round by round with the standard lab.

Levers are applied from outside, to the devices and namespaces the agent made, so the same run
measures them on this very overnet; what pays goes into the agent's data plane (dataplane/).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from overnet.sandbox.lab import LabError
from overnet.sandbox.topology import run as _run

from .labs import BenchLab, Context, netns_of
from .report import Results
from .throughput import Path, measure, raw_vxlan, ready_paths, test_seconds

BENCH = "tuning"


class JumboLab(BenchLab):
    """A lab whose underlay (bridge and every host's link to it) has MTU 9000."""

    MTU = 9000

    def _add_host(self, into: list, name: str, address: str, veth: str, net) -> None:
        super()._add_host(into, name, address, veth, net)
        h = into[-1]
        _run("ip", "link", "set", h.veth, "mtu", str(self.MTU))
        _run("ip", "-n", h.netns, "link", "set", "eth0", "mtu", str(self.MTU))
        _run("ip", "link", "set", self.state.bridge, "mtu", str(self.MTU))


def _sh(ns: str, *argv: str) -> None:
    proc = subprocess.run(["nsenter", f"--net={ns}", "--", *argv], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} in {ns}: {proc.stderr.strip()}")


def overlay_namespaces(lab: BenchLab) -> list[str]:
    """Every overlay network namespace the agents pinned, on every host."""
    out = []
    for h in lab.state.hosts:
        d = h.run_dir + "/overnet/netns"
        out += [os.path.join(d, n) for n in sorted(os.listdir(d))] if os.path.isdir(d) else []
    return out


def _links(ns: str, kind: str) -> list[str]:
    """Names of the links of `kind` (veth, vxlan...) in namespace `ns`."""
    proc = subprocess.run(["nsenter", f"--net={ns}", "ip", "-o", "link", "show", "type",
                           kind], capture_output=True, text=True, timeout=30, check=False)
    return [ln.split(":")[1].strip().split("@")[0] for ln in proc.stdout.splitlines()]


def lever_vxlan_gro_off(lab: BenchLab, containers: list[str]) -> Callable[[bool], None]:
    """GRO off on vxlan0 (overnet leaves the kernel's default, on: the decapsulated inner
    frames are aggregated before the containers' macvlans)."""
    ends = [(ns, dev) for ns in overlay_namespaces(lab) for dev in _links(ns, "vxlan")]

    def switch(on: bool) -> None:
        for ns, dev in ends:
            _sh(ns, "ethtool", "-K", dev, "gro", "off" if on else "on")
    return switch


def lever_vxlan_rps(lab: BenchLab, containers: list[str]) -> Callable[[bool], None]:
    """RPS on vxlan0: the decapsulated frames (and the containers' TCP receive work) are
    spread over every CPU instead of staying on the one that took the underlay packet."""
    ends = [(ns, dev) for ns in overlay_namespaces(lab) for dev in _links(ns, "vxlan")]
    mask = format((1 << (os.cpu_count() or 1)) - 1, "x")

    def switch(on: bool) -> None:
        for ns, dev in ends:
            _sh(ns, "unshare", "-m", "sh", "-c", "mount -t sysfs sysfs /sys && echo "
                f"{mask if on else 0} > /sys/class/net/{dev}/queues/rx-0/rps_cpus")
    return switch


# (Two levers of the earlier data path, br_netfilter off and GRO on the containers' veth
# pairs, went with it: the overlay has no bridge and no veth now; neither paid.)
# A lever's switch(False) is overnet as it is: one_lever leaves every lever off.
LEVERS = {"vxlan0-gro-off": lever_vxlan_gro_off, "vxlan0-rps": lever_vxlan_rps}


def _overlay(lab: BenchLab, tag: str) -> tuple[Path, list[str]]:
    lab.ensure_network("net-1", "tune")
    a = lab.start("net-1", "tune", f"tune-{tag}-a")
    b = lab.start("net-2", "tune", f"tune-{tag}-b")
    ca, cb = netns_of(a["State"]["Pid"]), netns_of(b["State"]["Pid"])
    return Path("overlay", "overnet overlay", ca, cb, b["NetworkSettings"]["IPAddress"]), [ca, cb]


def _ratio(res: Results, key: str, label: str, num: Path, den: Path, n: int) -> None:
    """num/den in Gbit/s and in Gbit per CPU-second, per round, with their CIs."""
    for p in (num, den):
        if f"tune.{p.key}.p{n}" not in res.figures:
            res.add_figure(f"tune.{p.key}.p{n}", BENCH, f"{p.label}, {n} stream(s)", "Gbit/s",
                           p.samples.get(n, []))
            res.add_figure(f"tune.{p.key}.p{n}.cpu", BENCH, f"{p.label}, {n} stream(s), per "
                           "CPU-second", "Gbit/CPU-s", p.per_cpu.get(n, []))
    for suffix, what in (("", ""), (".cpu", ", per CPU-second")):
        res.add_ratio(f"tune.{key}.p{n}{suffix}", BENCH, f"{label}, {n} stream(s){what}",
                      f"tune.{num.key}.p{n}{suffix}", f"tune.{den.key}.p{n}{suffix}")


def one_lever(ctx: Context, res: Results, lab: BenchLab, raw: Path, name: str,
              streams: tuple[int, ...]) -> None:
    base, containers = _overlay(lab, name)
    switch = LEVERS[name](lab, containers)
    off = Path(f"{name}.off", f"overlay, {name} off", base.client_ns, base.server_ns,
               base.server_ip)
    on = Path(f"{name}.on", f"overlay, {name} on", base.client_ns, base.server_ns,
              base.server_ip)
    rawp = Path(f"{name}.raw", "bare kernel VXLAN", raw.client_ns, raw.server_ns, raw.server_ip)
    paths = ready_paths(ctx, res, [off, on, rawp])

    def between(p: Path) -> None:
        if p is on:
            switch(True)
        elif p is off:
            switch(False)
    try:
        measure(ctx, paths, streams, between)
    finally:
        switch(False)
    for n in streams:
        _ratio(res, f"{name}.on_vs_off", f"{name}: on / off", on, off, n)
        _ratio(res, f"{name}.on_vs_raw", f"{name}: overlay with it / bare VXLAN", on, rawp, n)


def jumbo(ctx: Context, res: Results, streams: tuple[int, ...]) -> None:
    std = ctx.overnet_lab("main", bench=BENCH)
    big = ctx.overnet_lab("jumbo", bench=BENCH, cls=JumboLab)
    ov_std, _ = _overlay(std, "std")
    ov_big, _ = _overlay(big, "jmb")
    ov_std.key, ov_std.label = "mtu1500.overlay", "overlay, underlay MTU 1500"
    ov_big.key, ov_big.label = "mtu9000.overlay", "overlay, underlay MTU 9000"
    raw_big = raw_vxlan(big, mtu=JumboLab.MTU - 50)
    raw_big.key, raw_big.label = "mtu9000.raw", "bare VXLAN, underlay MTU 9000"
    h1, h2 = big.host("net-1"), big.host("net-2")
    und = Path("mtu9000.underlay", "underlay MTU 9000", f"/run/netns/{h1.netns}",
               f"/run/netns/{h2.netns}", h2.address)
    paths = ready_paths(ctx, res, [ov_std, ov_big, raw_big, und])
    measure(ctx, paths, streams)
    mtu = big.api("net-1").get("/info").get("mtu")
    res.note(BENCH, f"jumbo lab: overnet's agent reports MTU {mtu} on an MTU 9000 underlay")
    for n in streams:
        _ratio(res, "mtu9000.vs_1500", "overlay on MTU 9000 / on MTU 1500", ov_big, ov_std, n)
        _ratio(res, "mtu9000.vs_raw", "overlay / bare VXLAN, both MTU 9000", ov_big, raw_big, n)
        _ratio(res, "mtu9000.raw_vs_underlay", "bare VXLAN / underlay, both MTU 9000", raw_big,
               und, n)


def run(ctx: Context, res: Results) -> None:
    streams = (1, 4)
    lab = ctx.overnet_lab("main", bench=BENCH)
    raw = raw_vxlan(lab)
    for name in LEVERS:
        ctx.progress(BENCH, f"lever {name}")
        one_lever(ctx, res, lab, raw, name, streams)
    ctx.progress(BENCH, "lever jumbo underlay (MTU 9000)")
    jumbo(ctx, res, streams)
    res.note(BENCH, f"each lever: overlay with it off, with it on (switched before each test) "
             f"and the bare VXLAN reference, {ctx.cfg.reps} interleaved rounds of "
             f"{test_seconds(ctx.cfg)} tests")
