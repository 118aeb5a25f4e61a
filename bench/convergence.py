"""2. Convergence: how soon a container started on host A is reachable from a container on B.

A prober (bench/prober.py) runs inside the B container and, once armed, sends an ICMP echo
to the new container's address and looks its name up every 2 ms. The clock is
CLOCK_MONOTONIC, shared by every namespace. Per trial:

    t_issue   just before `overnet run -d` (or `docker run -d`) is started on A
    t_return  when that command has exited
    t_ping    first echo reply seen in B     t_name  first successful look-up in B

end to end = t_X - t_issue, after return = t_X - t_return (negative: already reachable when
the command returned). The new container's address is known beforehand: overnet gives the
lowest free address of the host's block (the trial container is removed after each trial
and an anchor keeps the block), Docker is told with --ip. overnet trials and Docker trials
alternate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from overnet.sandbox.lab import LabError

from .dockerlab import IMAGE
from .labs import PROBER, BenchLab, Context, LineProcess, Skip, netns_of
from .report import Results

BENCH = "convergence"
DOCKER_IP = "10.210.200.10"


class Side:
    """One system under test: start a trial container on A, probe from B, remove."""

    key = ""
    prober: LineProcess

    def arm(self, ip: str, name: str) -> None:
        self.prober.send(f"arm {ip} {name}")
        self.prober.expect("armed", 30)

    def result(self) -> dict:
        return json.loads(self.prober.expect("result", 30))

    def trial(self, i: int) -> dict | None:
        name = f"cv{self.key[0]}{self.key[-1]}{i}"
        ip = self.ip
        self.arm(ip, name)
        t_issue = time.monotonic()
        proc = subprocess.run(self.run_argv(name), capture_output=True, text=True, timeout=60)
        t_return = time.monotonic()
        r = self.result()
        if proc.returncode != 0:
            raise LabError(f"{' '.join(self.run_argv(name)[-6:])}: {proc.stderr.strip()}")
        cid = proc.stdout.strip().splitlines()[-1]
        actual = self.address_of(cid)
        self.remove(cid)
        if actual != ip:
            self.ip = actual          # the prediction was wrong: aim at it next time
            return None
        if r.get("name_ip") not in (None, ip):
            r["name"] = None          # a look-up that found another address does not count
        out = {"run": t_return - t_issue, "expected": ip,
               "answer": r.get("name_ip") or "no answer"}
        for what in ("ping", "name"):
            t = r.get(what)
            out[f"{what}_e2e"] = None if t is None else t - t_issue
            out[f"{what}_after"] = None if t is None else t - t_return
        return out

    def close(self) -> None:
        if getattr(self, "prober", None) is not None:
            self.prober.close()


class Overnet(Side):
    """Names looked up in /etc/hosts (the built-in runner's), or with `dns` through the
    network's resolver on its gateway (what every runtime's containers use)."""

    key = "overnet"

    def __init__(self, lab: BenchLab, dns: bool = False) -> None:
        self.lab = lab
        lab.ensure_network("net-1", "conv")
        if dns:
            self.key = "overnet_dns"
        else:
            self.anchor = lab.start("net-1", "conv", "conv-anchor")
        self.b = lab.start("net-2", "conv", "conv-probe-dns" if dns else "conv-probe")
        gateway = lab.api("net-2").get("/networks/conv")["gateway"]
        argv, env = lab.ssh_argv("net-2", ["overnet", "exec", "-i", self.b["Id"],
                                           sys.executable, PROBER, "--lookup",
                                           f"dns:{gateway}" if dns else "hosts"])
        self.prober = LineProcess(argv, env)
        self.prober.expect("ready", 30)
        # The first trial container gets the lowest free address of net-1's block.
        w = lab.start("net-1", "conv", "conv-warm")
        self.ip = w["NetworkSettings"]["IPAddress"]
        lab.remove("net-1", w["Id"])

    def run_argv(self, name: str) -> list[str]:
        return self.lab.cli_argv("net-1") + ["run", "-d", "--net", "conv", "--name", name,
                                             "sleep", "infinity"]

    def address_of(self, cid: str) -> str:
        return self.lab.api("net-1").get(f"/containers/{cid}")["NetworkSettings"]["IPAddress"]

    def remove(self, cid: str) -> None:
        self.lab.remove("net-1", cid)


class Docker(Side):
    key = "docker"

    def __init__(self, ctx: Context) -> None:
        self.lab = dl = ctx.docker_lab(BENCH)
        for host, name in (("net-1", "conv-anchor"), ("net-2", "conv-probe")):
            if dl.docker(host, "inspect", name, check=False).returncode != 0:
                dl.docker(host, "run", "-d", "--net", "benchov", "--name", name, IMAGE,
                          "sleep", "1000000")
        pid = dl.pid("net-2", "conv-probe")
        self.prober = LineProcess(["nsenter", f"--net={netns_of(pid)}", "--", sys.executable,
                                   PROBER, "--lookup", "dns:127.0.0.11"])
        self.prober.expect("ready", 30)
        self.ip = DOCKER_IP

    def run_argv(self, name: str) -> list[str]:
        return self.lab.docker_argv("net-1") + ["run", "-d", "--net", "benchov", "--ip",
                                                self.ip, "--name", name, IMAGE,
                                                "sleep", "1000000"]

    def address_of(self, cid: str) -> str:
        return self.lab.out("net-1", "inspect", "-f",
                            "{{(index .NetworkSettings.Networks \"benchov\").IPAddress}}", cid)

    def remove(self, cid: str) -> None:
        self.lab.docker("net-1", "rm", "-f", cid, check=False)


FIELDS = (("ping_e2e", "first ping, end to end (from run issued)"),
          ("name_e2e", "first name look-up, end to end"),
          ("ping_after", "first ping, after run returned"),
          ("name_after", "first name look-up, after run returned"),
          ("run", "run -d command itself"))


def run(ctx: Context, res: Results) -> None:
    cfg = ctx.cfg
    sides: list[Side] = []
    try:
        lab = ctx.overnet_lab("main", bench=BENCH)
        sides.append(Overnet(lab))
        sides.append(Overnet(lab, dns=True))
        try:
            sides.append(Docker(ctx))
        except (Skip, LabError) as e:
            res.skip(BENCH, "Docker overlay", str(e))
            ctx.progress(BENCH, f"Docker overlay: skipped: {e}")
        samples = {s.key: {f: [] for f, _ in FIELDS} for s in sides}
        for i in range(cfg.conv_trials):
            for s in sides:
                r = None
                for _ in range(3):            # a trial whose address was mispredicted
                    r = s.trial(i)
                    if r is not None:
                        break
                for f, _ in FIELDS:
                    samples[s.key][f].append(None if r is None else r[f])
                ctx.progress(BENCH, f"trial {i + 1}/{cfg.conv_trials} {s.key:<7} " + (
                    "address mispredicted" if r is None else
                    f"run {r['run'] * 1e3:6.1f} ms, ping {_ms(r['ping_e2e'])} ms, "
                    f"name {_ms(r['name_e2e'])} ms end to end" + (
                        "" if r["name_e2e"] is not None else
                        f" (the name gave {r['answer']}, not {r['expected']})")))
        floors = cli_floor(ctx, sides)
    finally:
        for s in sides:
            s.close()
    names = {"overnet": "overnet", "overnet_dns": "overnet (DNS)", "docker": "Docker"}
    for key, floor in floors.items():
        res.add_figure(f"conv.{key}.cli_floor", BENCH, f"{names[key]}: CLI round trip floor "
                       f"(`{key if key == 'docker' else 'overnet'} ps`)", "ms", floor)
    for s in sides:
        for f, label in FIELDS:
            res.add_figure(f"conv.{s.key}.{f}", BENCH, f"{names[s.key]}: {label}", "ms",
                           [None if v is None else v * 1e3 for v in samples[s.key][f]])
    res.add_absolute("conv.overnet.e2e_p50", BENCH, "overnet first ping end to end, p50",
                     "conv.overnet.ping_e2e", "median", "<=", 150)
    res.add_absolute("conv.overnet.name_e2e_p50", BENCH, "overnet first name look-up end to "
                     "end, p50", "conv.overnet.name_e2e", "median", "<=", 150)
    res.add_absolute("conv.overnet.after_p95", BENCH, "overnet first ping after run returned, "
                     "p95", "conv.overnet.ping_after", "p95", "<=", 10)
    res.add_absolute("conv.overnet.name_after_p95", BENCH, "overnet first name look-up after "
                     "run returned, p95", "conv.overnet.name_after", "p95", "<=", 10)
    res.add_ratio("conv.ping_e2e_vs_docker", BENCH, "first ping end to end, overnet / Docker",
                  "conv.overnet.ping_e2e", "conv.docker.ping_e2e", "<=", 0.3)
    res.add_ratio("conv.name_e2e_vs_docker", BENCH,
                  "first name look-up end to end, overnet (/etc/hosts) / Docker",
                  "conv.overnet.name_e2e", "conv.docker.name_e2e")
    res.add_ratio("conv.dns_e2e_vs_docker", BENCH,
                  "first name look-up end to end, overnet (DNS) / Docker (DNS)",
                  "conv.overnet_dns.name_e2e", "conv.docker.name_e2e", "<=", 0.5)
    res.add_absolute("conv.overnet_dns.name_after_p95", BENCH, "overnet first DNS look-up "
                     "after run returned, p95", "conv.overnet_dns.name_after", "p95", "<=", 20)
    res.note(BENCH, f"{cfg.conv_trials} trials each, overnet and Docker alternating; the prober "
             "probes every 2 ms from inside the B container; overnet's look-up reads "
             "/etc/hosts, overnet (DNS) asks the network's resolver on its gateway, Docker's "
             "asks its embedded DNS (127.0.0.11), where Docker puts names")


def cli_floor(ctx: Context, sides: list[Side], n: int = 10) -> dict[str, list[float]]:
    """What any command costs before the daemon does real work: start the client, one
    request, exit. Part of every end-to-end figure above."""
    sides = [s for s in sides if s.key != "overnet_dns"]      # the same CLI as "overnet"
    out: dict[str, list[float]] = {s.key: [] for s in sides}
    for _ in range(n):
        for s in sides:
            argv = (s.lab.cli_argv("net-1") if s.key == "overnet"
                    else s.lab.docker_argv("net-1")) + ["ps", "-q"]
            t = time.monotonic()
            subprocess.run(argv, capture_output=True, timeout=60)
            out[s.key].append((time.monotonic() - t) * 1e3)
    return out


def _ms(v: float | None) -> str:
    return "   –  " if v is None else f"{v * 1e3:6.1f}"
