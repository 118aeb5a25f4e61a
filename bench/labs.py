"""The labs a bench run builds, shared by the benchmarks of one invocation and always torn down.

Every lab is a sandbox (`overnet.sandbox.lab.Lab`): namespace hosts on their own underlay
bridge, a real etcd in the store host. overnet labs run real agents; the Docker lab runs one
dockerd per host (bench/dockerlab.py). Labs live under /var/lib/overnet/bench with names
starting "bn", so a run that was killed hard is cleaned up by the next one.
"""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from overnet.api.client import Client
from overnet.sandbox.lab import Lab, LabError

from overnet.sandbox.runtimes import busybox_tar

from .dockerlab import IMAGE, DockerLab, docker_missing

ROOT = "/var/lib/overnet/bench"
HERE = os.path.dirname(os.path.abspath(__file__))
PROBER = os.path.join(HERE, "prober.py")
CNI_HELPER = os.path.join(HERE, "cni_helper.py")
LAB_NAMES = ("bn-main", "bn-fvx", "bn-fhg", "bn-dock", "bn-scl", "bn-sc2", "bn-jmb", "bn-rt")
FLANNEL_NETWORK = "10.1.0.0/16"


class Skip(Exception):
    """A row that cannot be measured here; the message says why."""


@dataclass
class Config:
    quick: bool = False
    reps: int = 8                 # throughput rounds (a 95 % CI needs several)
    duration: int = 2             # iperf3 seconds per 1-stream test (after the omitted first)
    duration_multi: int = 5       # ... per test of several streams (seconds())
    omit: int = 1
    conv_trials: int = 30
    setup_n: int = 100
    docker_runs: int = 20
    scale_hosts: int = 50          # the real run: 50 hosts x 20 = 1,000 containers
    scale_per_host: int = 20
    scale_rounds: int = 1
    ctl_hosts: tuple = (100, 1000, 5000)     # simulated control plane steps
    ctl_per_host: int = 2                    # background endpoints per simulated host
    ctl_starts: int = 40                     # measured starts per step
    ctl_workers: int = 2                     # worker processes holding the agents
    ctl_watchers: tuple = (1000, 2000, 5000)  # etcd alone: plain watchers of the store
    ctl_budget_s: float = 40 * 60
    ctl_step_limit_s: float = 900            # a step whose endpoints take longer: the limit
    ctl_net_size: int = 50                   # hosts per overlay network
    ctl_channel: str = "worker"              # one etcd client per "agent" or per "worker"
    ctl_mem_mb: float = 9000                 # the workers' memory the run stays under
    ctl_fresh: bool = True                   # each host count on a cluster of its own
    ctl_big: int = 0                         # then this many hosts, an agent on each,
    ctl_big_per_host: int = 20               # with this many endpoints (5,000 x 20 = 100,000)
    docker: bool = True
    budget_s: float | None = 20 * 60     # whole invocation; the scale rounds adapt to it

    @classmethod
    def make(cls, quick: bool, **over) -> "Config":
        c = cls(quick=quick)
        if quick:
            c.reps, c.duration, c.duration_multi, c.omit = 3, 1, 1, 0
            c.conv_trials, c.setup_n, c.docker_runs = 8, 20, 5
            c.scale_hosts, c.scale_per_host, c.scale_rounds = 4, 4, 1
            c.ctl_hosts, c.ctl_starts, c.ctl_budget_s = (20, 100), 15, 5 * 60
            c.ctl_watchers = (200,)
        for k, v in over.items():
            if v is not None:
                setattr(c, k, v)
        return c

    def seconds(self, streams: int) -> int:
        """iperf3 seconds of one test of `streams` streams. Several streams on 2 CPUs vary far
        more from test to test: over 6 rounds, 2 s tests of 4 streams had a coefficient of
        variation of 16 % (bare VXLAN and the overlay), 6 s tests 6 %."""
        return self.duration if streams == 1 else max(self.duration, self.duration_multi)


class Progress:
    """One line per step on stderr, with the time since the start."""

    def __init__(self, stream=sys.stderr) -> None:
        self.t0 = time.monotonic()
        self.first_try_failures: list[str] = []
        self.stream = stream

    def __call__(self, bench: str, msg: str) -> None:
        s = int(time.monotonic() - self.t0)
        print(f"[{s // 60:2d}:{s % 60:02d}] {bench:<11} {msg}", file=self.stream, flush=True)

    def lab_say(self, bench: str) -> Callable[[str], None]:
        return lambda m: self(bench, "  " + m)


def pick_underlay(taken: set[str]) -> str:
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for third in list(range(201, 250)) + random.sample(range(100, 200), 100):
        cand = f"192.168.{third}.0/24"
        if cand not in taken and f"192.168.{third}." not in used:
            taken.add(cand)
            return cand
    raise LabError("no free 192.168.X.0/24 for an underlay")


class BenchLab(Lab):
    """An overnet sandbox with the helpers the benchmarks need."""

    def api(self, host: str) -> Client:
        return self.client(host)

    def cli_argv(self, host: str) -> list[str]:
        """The overnet CLI talking to HOST's agent (the CLI only talks to the socket, so it
        runs from here, like Docker's client below)."""
        exe = os.path.join(os.path.dirname(sys.executable), "overnet")
        return [exe, "-H", "unix://" + self.host(host).socket]

    def ov(self, host: str, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run(self.cli_argv(host) + list(args), capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"overnet {' '.join(args)} on {host}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def start(self, host: str, net: str, name: str = "", cmd: list[str] | None = None) -> dict:
        return self.api(host).post("/containers", {"net": net, "name": name or None,
                                                   "detach": True,
                                                   "cmd": cmd or ["sleep", "infinity"]})

    def remove(self, host: str, cid: str) -> None:
        self.api(host).delete(f"/containers/{cid}", force="1")

    def ensure_network(self, host: str, name: str, subnet: str | None = None) -> None:
        nets = {n["name"] for n in self.api(host).get("/networks")}
        if name not in nets:
            self.api(host).post("/networks", {"name": name, "driver": "overlay",
                                              "subnet": subnet})

    def etcd_metrics(self) -> str:
        st = self.state
        code = ("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
                f"'http://{st.store.address}:2379/metrics',timeout=10).read().decode())")
        proc = self.run("store", [sys.executable, "-c", code], timeout=30)
        if proc.returncode != 0:
            raise LabError(f"etcd /metrics: {proc.stderr.strip()}")
        return proc.stdout

    def agent_rss_mb(self) -> dict[str, float]:
        out = {}
        for h in self.state.hosts:
            out[h.name] = rss_mb(h.agent_pid)
        return out


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def netns_of(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


class LineProcess:
    """A child speaking a line protocol: lines read by a thread, so reads can time out."""

    def __init__(self, argv: list[str], env: dict | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, bufsize=1,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True
                         ).start()
        threading.Thread(target=self._drain, daemon=True).start()

    @staticmethod
    def _pump(stream, q) -> None:
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line.rstrip())
            del self.err[:-20]

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str, timeout: float) -> str:
        """The rest of the next line starting with `word`; LabError on error, EOF, timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"no '{word}' from {self.proc.args[-3:]} in {timeout:.0f}s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=5)
                raise LabError(f"{os.path.basename(str(self.proc.args[-1]))} ended "
                               f"({self.proc.returncode}): {' '.join(self.err[-3:])}")
            head, _, rest = line.partition(" ")
            if head == word:
                return rest
            if head == "error":
                raise LabError(json.loads(rest) if rest.startswith('"') else rest)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Context:
    """The labs of one invocation, built on first use, all torn down by close()."""

    def __init__(self, cfg: Config, progress: Progress) -> None:
        self.cfg = cfg
        self.progress = progress
        self.labs: dict[str, Lab] = {}
        self.failed: dict[str, str] = {}
        self.underlays: set[str] = set()
        self.docker_ready = False
        self.closers: list[Callable[[], None]] = []
        self.t0 = time.monotonic()
        self.first_try_failures: list[str] = []

    def time_left(self) -> float | None:
        if self.cfg.budget_s is None:
            return None
        return self.cfg.budget_s - (time.monotonic() - self.t0)

    @staticmethod
    def clean_leftovers(say: Callable[[str], None]) -> None:
        """Labs an earlier run could not take down (killed with SIGKILL, machine crash)."""
        for name in LAB_NAMES:
            cls = DockerLab if name == "bn-dock" else BenchLab
            lab = cls(name, root=ROOT, say=say)
            if lab.state is not None:
                say(f"removing lab {name} left by an earlier run")
                lab.down(quiet=True)

    def overnet_lab(self, key: str = "main", hosts: int = 2, flannel: dict | None = None,
                    bench: str = "", cls: type[BenchLab] | None = None) -> BenchLab:
        name = {"main": "bn-main", "fvx": "bn-fvx", "fhg": "bn-fhg", "scale": "bn-scl",
                "scale2": "bn-sc2", "jumbo": "bn-jmb"}[key]
        if name in self.labs:
            return self.labs[name]
        if name in self.failed:
            raise Skip(self.failed[name])
        lab = (cls or BenchLab)(name, root=ROOT, say=self.progress.lab_say(bench or key))
        self.progress(bench or key, f"building lab {name}: {hosts} host(s)"
                      + (f", flannel {flannel}" if flannel else ""))
        t = time.monotonic()
        try:
            lab.up(hosts=hosts, underlay=pick_underlay(self.underlays), flannel=flannel)
        except LabError as e:
            msg = str(e).strip().splitlines()
            self.failed[name] = msg[0] if len(msg) == 1 else " / ".join(m for m in msg[-3:] if m)
            raise Skip(self.failed[name]) from None
        self.labs[name] = lab
        self.progress(bench or key, f"lab {name} up in {time.monotonic() - t:.1f}s")
        return lab

    def drop(self, key_name: str) -> None:
        lab = self.labs.pop(key_name, None)
        if lab is not None:
            lab.down(quiet=True)

    def docker_lab(self, bench: str = "") -> DockerLab:
        name = "bn-dock"
        if name in self.labs:
            return self.labs[name]
        if not self.cfg.docker:
            raise Skip("--no-docker")
        if name in self.failed:
            raise Skip(self.failed[name])
        why = docker_missing()
        if why:
            self.failed[name] = why
            raise Skip(why)
        lab = DockerLab(name, root=ROOT, say=self.progress.lab_say(bench or "docker"))
        self.progress(bench or "docker", "building Docker lab bn-dock: 2 hosts, one dockerd each")
        t = time.monotonic()
        try:
            lab.up(hosts=2, underlay=pick_underlay(self.underlays))
            self.labs[name] = lab
            lab.import_image(busybox_tar())
            lab.docker("net-1", "network", "create", "-d", "overlay", "--subnet",
                       "10.210.0.0/16", "benchov")
        except (LabError, subprocess.SubprocessError, OSError) as e:
            self.labs.pop(name, None)
            lab.down(quiet=True)
            msg = str(e).strip().splitlines()
            self.failed[name] = "Docker could not run: " + (msg[-1] if msg else repr(e))
            raise Skip(self.failed[name]) from None
        self.progress(bench or "docker", f"Docker lab up in {time.monotonic() - t:.1f}s "
                      f"(image {IMAGE} imported, overlay network benchov)")
        return lab

    def close(self) -> None:
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception as e:  # clean-up goes on
                self.progress("cleanup", f"{e}")
        self.closers.clear()
        for name in list(self.labs)[::-1]:
            self.progress("cleanup", f"taking lab {name} down")
            try:
                self.labs.pop(name).down(quiet=True)
            except Exception as e:
                self.progress("cleanup", f"{name}: {e}")


def flannel_support() -> str | None:
    """Why the flannel-compatible backends cannot be measured with this overnet, or None."""
    exe = os.path.join(os.path.dirname(sys.executable), "overnet")
    out = subprocess.run([exe, "agent", "--help"], capture_output=True, text=True).stdout
    if "--flannel-network" not in out:
        return ("this overnet has no flannel-compatible host subnets yet "
                "(`overnet agent` has no --flannel-network option)")
    return None
