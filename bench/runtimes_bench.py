"""Runtimes on overnet, each against its reference measured side by side in the same run:

1. CNI ADD: `overnet-cni` (the compiled shim `overnet cni install` puts in place) onto an
   overlay network against the reference `bridge` + `host-local` ADD, interleaved round by
   round (each followed by its DEL), on one sandbox host, with the Python plugin alone
   (`overnet-cni-python`) beside them; then where the shim's ADD goes (bench/cni_steps.py).
2. DNS: overnet's resolver on a network's gateway against Docker's embedded DNS (127.0.0.11 in a
   container on a user-defined Docker network), same client (bench/dns_bench.py client mode),
   same host: latency p50/p99 and queries per second.
3. Name convergence through CNI: from an ADD on host 1 until a container on host 2 resolves the
   new name through overnet's DNS and pings it (p50, p95).

    sudo .venv/bin/python -m bench runtimes      (also part of `bench all`)

Figures only, no assertions; the sandbox is removed at the end, also after a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from overnet.cni import install as installer
from overnet.sandbox.lab import Lab
from overnet.sandbox.runtimes import IMAGE

from .cni_steps import StepTimer
from .dockerlab import docker_missing
from .labs import ROOT, Skip, pick_underlay
from .stats import percentile

LAB_NAME = "bn-rt"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plugin(lab: Lab, host: str, binary: str, verb: str, conf: dict, cid: str, ns: str,
            bindir: str, args: str = "") -> float:
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
           "CNI_PATH": bindir, "CNI_ARGS": args, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    argv = lab.enter_argv(lab.host(host)) + [os.path.join(bindir, binary)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True,
                          timeout=60)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} {verb}: {proc.stdout.decode()} {proc.stderr.decode()}")
    return took


def _netns(lab: Lab, name: str) -> str:
    lab.run("net-1", ["ip", "netns", "add", name])
    return f"/run/netns/{name}"


def _plugin_dir(prefix: str, reference: tuple[str, ...]) -> tuple[str, str]:
    """(scratch dir, CNI bin dir): overnet-cni installed, Debian's `reference` plugins linked."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    for p in reference:
        os.symlink(f"/usr/lib/cni/{p}", os.path.join(bindir, p))
    installer.install([bindir], os.path.join(tmp, "net.d"), "bench", "1.0.0")
    return tmp, bindir


def cni_add(lab: Lab, rounds: int, say) -> dict[str, list[float]]:
    """ADD times in ms, overnet-cni's (the installed shim), the reference's and the Python
    plugin's, round by round."""
    tmp, bindir = _plugin_dir("bench-cni-", ("bridge", "host-local", "portmap"))
    ours = {"cniVersion": "1.0.0", "name": "multihost", "type": "overnet-cni"}
    ref = {"cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "bref0",
           "isGateway": True, "ipam": {"type": "host-local", "subnet": "10.222.0.0/16",
                                       "dataDir": os.path.join(tmp, "ipam")}}
    times: dict[str, list[float]] = {"overnet-cni": [], "reference": [], "python": []}
    steps = StepTimer(lab, bindir, "multihost")
    # a resident container on each network, as on any host in use: the network's devices
    # exist (the reference's bridge likewise stays after its first ADD)
    lab.run("net-1", ["overnet", "run", "-d", "--name", "resident", "sleep", "infinity"])
    _plugin(lab, "net-1", "bridge", "ADD", ref, "resident", _netns(lab, "resident"), bindir)
    try:
        for i in range(rounds):
            _cni_round(lab, i, bindir, (ours, ref), times)
            steps.round()
            if i % 10 == 9:
                say(f"cni: {i + 1}/{rounds} rounds")
    finally:
        steps.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: [1000 * t for t in v] for k, v in times.items()} | {
        f"step.{k}": v for k, v in steps.samples().items()}


def _cni_round(lab: Lab, i: int, bindir: str, confs: tuple[dict, dict],
               times: dict[str, list[float]]) -> None:
    """One round: each system's ADD (then its DEL): the shim, the reference, and the Python
    plugin alone (the shim's fallback, and what overnet-cni was before the shim)."""
    ours, ref = confs
    systems = (("overnet-cni", "overnet-cni", ours), ("reference", "bridge", ref),
               ("python", "overnet-cni-python", ours))
    for name, binary, conf in systems[i % 3:] + systems[:i % 3]:
        ns_name = f"bn{secrets.token_hex(3)}"
        lab.run("net-1", ["ip", "netns", "add", ns_name])
        cid = secrets.token_hex(16)
        try:
            times[name].append(_plugin(lab, "net-1", binary, "ADD", conf, cid,
                                       f"/run/netns/{ns_name}", bindir))
            _plugin(lab, "net-1", binary, "DEL", conf, cid, f"/run/netns/{ns_name}", bindir)
        finally:
            lab.run("net-1", ["ip", "netns", "del", ns_name])


STEPS = (("enter", "start of /bin/true in the sandbox host's namespaces (nsenter), as the "
                   "plugins here are run"),
         ("spawn", "start of a trivial process (/bin/true), the floor of any plugin"),
         ("shim", "overnet-cni shim process: start, stdin, one call to an instant stub agent"),
         ("route", "agent's POST /cni ADD on its socket, no plugin process"),
         ("attach", "agent's POST /endpoints (the attach POST /cni makes in-process)"))


def _dns_client(argv_prefix: list[str], server: str, name: str, count: int) -> dict:
    cmd = argv_prefix + [sys.executable, "-m", "bench.dns_bench", "client", "--server",
                         server, "--name", name, "--count", str(count), "--total",
                         str(count * 5)]
    proc = subprocess.run(cmd, capture_output=True, timeout=300, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"dns client: {proc.stderr.decode()[-500:]}")
    data = json.loads(proc.stdout)
    lat = data["latencies"]
    return {"p50_us": 1e6 * percentile(lat, 50), "p99_us": 1e6 * percentile(lat, 99), "qps": data["qps"]}


def dns(lab: Lab, count: int, say) -> dict:
    """The same client, from a container's namespace on net-1, against each resolver."""
    own = lab.run("net-1", ["overnet", "run", "-d", "--name", "dnsweb", "sleep", "infinity"])
    pid = json.loads(lab.run("net-1", ["overnet", "inspect", "dnsweb"]).stdout)[0]["State"][
        "Pid"]
    net = json.loads(lab.run("net-1", ["overnet", "network", "inspect", "multihost"]).stdout)[0]
    prefix = ["nsenter", f"--net=/proc/{pid}/ns/net"]
    ours = _dns_client(prefix, net["gateway"], "dnsweb.multihost.overnet", count)
    say("dns: overnet measured")
    lab.run("net-1", ["docker", "network", "create", "dnsref"])
    lab.run("net-1", ["docker", "run", "-d", "--name", "dkweb", "--network", "dnsref", IMAGE,
                      "sleep", "100000"])
    dpid = json.loads(lab.run("net-1", ["docker", "inspect", "dkweb"]).stdout)[0]["State"][
        "Pid"]
    theirs = _dns_client(["nsenter", f"--net=/proc/{dpid}/ns/net"], "127.0.0.11", "dkweb", count)
    say("dns: Docker measured")
    del own
    return {"overnet": ours, "docker": theirs}


def add_to_name(lab: Lab, rounds: int, say) -> list[float]:
    """ADD on net-1 (overnet-cni, a new name) -> a container on net-2 resolves and pings it;
    ms per round."""
    tmp, bindir = _plugin_dir("bench-conv-", ("portmap",))
    conf = {"cniVersion": "1.0.0", "name": "multihost", "type": "overnet-cni"}
    lab.run("net-2", ["overnet", "run", "-d", "--name", "watcher", "sleep", "infinity"])
    out = []
    try:
        for i in range(rounds):
            name, ns_name, cid = f"pod{i}x{secrets.token_hex(2)}", f"bc{i}", secrets.token_hex(16)
            lab.run("net-1", ["ip", "netns", "add", ns_name])
            probe = subprocess.Popen(
                lab.ssh_argv("net-2", ["overnet", "exec", "watcher", "sh", "-c",
                                       f"until ping -c 1 -W 0.05 {name} >/dev/null 2>&1; "
                                       "do :; done"])[0],
                env=lab.ssh_argv("net-2", [])[1])
            time.sleep(0.3)   # the probe is looping
            t0 = time.perf_counter()
            _plugin(lab, "net-1", "overnet-cni", "ADD", conf, cid, f"/run/netns/{ns_name}", bindir,
                    args=f"K8S_POD_NAME={name}")
            probe.wait(timeout=30)
            out.append(time.perf_counter() - t0)
            _plugin(lab, "net-1", "overnet-cni", "DEL", conf, cid, f"/run/netns/{ns_name}", bindir)
            lab.run("net-1", ["ip", "netns", "del", ns_name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"add-to-name: {rounds} rounds")
    return [1000 * t for t in out]


def run(ctx, res) -> None:
    """`python -m bench all` (or `runtimes`): the same three parts, into the run's results."""
    bench = "runtimes"
    docker = ctx.cfg.docker and docker_missing() is None
    lab = Lab(LAB_NAME, root=ROOT, say=ctx.progress.lab_say(bench))
    quick = ctx.cfg.quick
    try:
        try:
            lab.up(hosts=2, underlay=pick_underlay(ctx.underlays),
                   runtimes=["docker"] if docker else [])
        except Exception as e:  # noqa: BLE001 - said in the results, the other benches go on
            raise Skip(f"its lab did not come up: {e}") from None

        def say(msg: str) -> None:
            ctx.progress(bench, msg)

        cni = cni_add(lab, 10 if quick else 30, say)
        res.add_figure("rt.cni.overnet", bench, "overnet-cni ADD (overlay network)", "ms",
                       cni["overnet-cni"])
        res.add_figure("rt.cni.reference", bench, "reference CNI bridge + host-local ADD", "ms",
                       cni["reference"])
        res.add_ratio("rt.cni_vs_reference", bench, "overnet-cni ADD / reference CNI ADD",
                      "rt.cni.overnet", "rt.cni.reference", "<=", 0.7)
        res.add_figure("rt.cni.python", bench, "overnet-cni-python ADD (the Python plugin "
                       "alone: the shim's fallback)", "ms", cni["python"])
        res.add_ratio("rt.cni_python_vs_reference", bench, "overnet-cni-python ADD / reference "
                      "CNI ADD", "rt.cni.python", "rt.cni.reference")
        for key, label in STEPS:
            res.add_figure(f"rt.cni.step.{key}", bench, f"overnet-cni ADD step: {label}", "ms",
                           cni[f"step.{key}"])
        res.add_ratio("rt.cni.route_vs_attach", bench, "agent's POST /cni ADD / its POST "
                      "/endpoints (the route's own cost)", "rt.cni.step.route",
                      "rt.cni.step.attach", paired=True)
        res.add_ratio("rt.cni.shim_vs_spawn", bench, "overnet-cni shim process / start of "
                      "/bin/true (the shim's own cost)", "rt.cni.step.shim", "rt.cni.step.spawn",
                      paired=True)
        if docker:
            d = dns(lab, 500 if quick else 2000, say)
            for who, label in (("overnet", "overnet's resolver"),
                               ("docker", "Docker's embedded DNS")):
                for k, unit in (("p50_us", "µs"), ("p99_us", "µs"), ("qps", "queries/s")):
                    res.add_figure(f"rt.dns.{who}.{k}", bench, f"DNS {k.split('_')[0]}, "
                                   f"{label}", unit, [d[who][k]])
            res.add_ratio("rt.dns_p50", bench, "DNS query latency p50, overnet / Docker",
                          "rt.dns.overnet.p50_us", "rt.dns.docker.p50_us")
        else:
            res.skip(bench, "DNS against Docker's embedded DNS", docker_missing() or "--no-docker")
        res.add_figure("rt.add_to_name", bench, "CNI ADD on host 1 -> a container on host 2 "
                       "resolves and pings the new name", "ms",
                       add_to_name(lab, 5 if quick else 10, say))
        res.note(bench, "CNI ADD: overnet-cni and the reference interleaved round by round, "
                 "each followed by its DEL, with a resident container on each network (its "
                 "devices exist, as on any host in use)")
    finally:
        lab.down(quiet=True)
