"""The seeds' multi-VM lab on one machine, built from namespaces.

    underlay bridge <name>-br (root namespace, no address, no route)
      ├── store   netns <name>-store   192.168.33.10  etcd
      ├── net-1   netns <name>-net-1   192.168.33.11  overnet agent
      └── net-2   netns <name>-net-2   192.168.33.12  overnet agent

A host is a network namespace plus a small holder process that owns the host's mount and UTS
namespaces: its own tmpfs on /run (so /run/overnet and /run/flannel are the host's own, as on
a real machine) and its own hostname. Agents, `ssh` shells and commands enter all three.
Everything made is written down in lab.json as it is made, so `down` (and a failed `up`)
removes exactly that.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..api.client import ApiError, Client
from ..runtime.process import alive

DEFAULT_UNDERLAY = "192.168.33.0/24"
ETCD_PORT = 2379
LAB_ROOT = "/var/lib/overnet/sandbox"


class LabError(Exception):
    pass


@dataclass
class Host:
    name: str
    netns: str
    address: str
    veth: str                 # root-namespace end, on the underlay bridge
    holder_pid: int = 0
    agent_pid: int = 0

    @property
    def run_dir(self) -> str:
        """The host's /run, seen from the root mount namespace."""
        return f"/proc/{self.holder_pid}/root/run"

    @property
    def socket(self) -> str:
        return self.run_dir + "/overnet/overnet.sock"


@dataclass
class LabState:
    name: str
    underlay: str
    bridge: str
    hosts: list[Host] = field(default_factory=list)
    store: Host | None = None
    etcd_pid: int = 0
    flannel: dict = field(default_factory=dict)
    agent_args: list = field(default_factory=list)

    @property
    def store_url(self) -> str:
        return f"etcd://{self.store.address}:{ETCD_PORT}" if self.store else ""


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reaps it if it is our child."""
    if not _alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _alive(pid):
                return
            time.sleep(0.02)


def _tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


class Lab:
    def __init__(self, name: str = "overnet", root: str = LAB_ROOT,
                 say: Callable[[str], None] = print) -> None:
        if not name.replace("-", "").isalnum() or len(name) > 8:
            raise LabError(f"invalid sandbox name {name!r}: up to 8 letters, digits or '-'")
        self.name = name
        self.dir = os.path.join(root, name)
        self.say = say
        self.state: LabState | None = self._load()

    # --- bookkeeping ----------------------------------------------------------------------

    @property
    def _file(self) -> str:
        return os.path.join(self.dir, "lab.json")

    def _load(self) -> LabState | None:
        try:
            with open(self._file) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        hosts = [Host(**h) for h in data.pop("hosts")]
        store = data.pop("store")
        return LabState(**data, hosts=hosts, store=Host(**store) if store else None)

    def _save(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(self._file + ".tmp", "w") as f:
            json.dump(asdict(self.state), f, indent=1)
        os.replace(self._file + ".tmp", self._file)

    def host(self, name: str) -> Host:
        st = self.state
        if st is None:
            raise LabError(f"sandbox {self.name!r} is not up: run `overnet sandbox up`")
        for h in st.hosts + ([st.store] if st.store else []):
            if h.name == name:
                return h
        known = ", ".join(h.name for h in st.hosts)
        raise LabError(f"no host {name!r} in sandbox {self.name!r} (hosts: {known}, store)")

    def client(self, host: str) -> Client:
        return Client("unix://" + self.host(host).socket, timeout=60)

    # --- up ---------------------------------------------------------------------------------

    def up(self, hosts: int = 2, underlay: str = DEFAULT_UNDERLAY, flannel: dict | None = None,
           agent_args: list[str] | None = None) -> bool:
        """Build the lab. False (and no change) if it is already up."""
        if self.state is not None:
            return False
        net = self._check_underlay(underlay, hosts)
        self.state = LabState(name=self.name, underlay=str(net), bridge=f"{self.name}-br",
                              flannel=flannel or {}, agent_args=list(agent_args or []))
        try:
            self._build(net, hosts)
        except BaseException as e:
            self.say(f"up failed: {e}; rolling back")
            self.down(quiet=True)
            raise
        return True

    def _check_underlay(self, underlay: str, hosts: int) -> ipaddress.IPv4Network:
        try:
            net = ipaddress.IPv4Network(underlay)
        except ValueError:
            raise LabError(f"invalid --underlay {underlay!r}: expected an IPv4 CIDR such as "
                           f"{DEFAULT_UNDERLAY}") from None
        if hosts < 1 or hosts > 200:
            raise LabError(f"invalid --hosts {hosts}: between 1 and 200")
        if net.num_addresses < hosts + 14:
            raise LabError(f"underlay {net} is too small for {hosts} hosts")
        taken = _run("ip", "-4", "-o", "addr", "show").stdout
        for line in taken.splitlines():
            addr = ipaddress.IPv4Interface(line.split()[3])
            if addr.network.overlaps(net):
                raise LabError(f"underlay {net} is already in use on this machine "
                               f"({addr} on {line.split()[1]}): choose another --underlay")
        for ns in _run("ip", "netns", "list").stdout.split():
            if ns.startswith(self.name + "-"):
                raise LabError(f"namespace {ns} already exists: is another sandbox named "
                               f"{self.name!r} around? (`overnet sandbox down --name {self.name}`)")
        return net

    def _build(self, net: ipaddress.IPv4Network, count: int) -> None:
        st = self.state
        os.makedirs(self.dir, exist_ok=True)
        self._save()
        self.say(f"underlay bridge {st.bridge} ({net}, no address on this machine)")
        _run("ip", "link", "add", st.bridge, "type", "bridge")
        _run("ip", "link", "set", st.bridge, "up")
        base = net.network_address + 10
        st.store = self._make_host("store", str(base), 0, net.prefixlen)
        self._save()
        self._start_etcd()
        for i in range(1, count + 1):
            h = self._make_host(f"net-{i}", str(base + i), i, net.prefixlen)
            st.hosts.append(h)
            self._save()
        for h in st.hosts:
            self._start_agent(h)
        for h in st.hosts:
            self._wait_agent(h)

    def _make_host(self, name: str, address: str, index: int, prefixlen: int) -> Host:
        st = self.state
        h = Host(name=name, netns=f"{self.name}-{name}", address=address,
                 veth=f"{self.name}-v{index}")
        _run("ip", "netns", "add", h.netns)
        _run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0",
             "netns", h.netns)
        _run("ip", "link", "set", h.veth, "master", st.bridge, "up")
        ns = ("ip", "-n", h.netns)
        _run(*ns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
        _run(*ns, "link", "set", "eth0", "up")
        _run(*ns, "link", "set", "lo", "up")
        os.makedirs(os.path.join(self.dir, name), exist_ok=True)
        # The holder owns the host's mount and UTS namespaces: its own /run and hostname.
        script = ("mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/overnet /run/flannel "
                  "/run/netns && hostname \"$0\" && exec sleep infinity")
        holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", "--mount", "--uts",
             "--propagation", "private", "sh", "-c", script, name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        h.holder_pid = holder.pid
        deadline = time.monotonic() + 5
        while not os.path.isdir(h.run_dir + "/overnet"):
            if holder.poll() is not None:
                raise LabError(f"host {name}: could not set up its namespaces: "
                               f"{holder.stderr.read().decode().strip()}")
            if time.monotonic() > deadline:
                raise LabError(f"host {name}: namespaces not ready after 5s")
            time.sleep(0.01)
        self.say(f"host {name:<8} {address:<15} namespace {h.netns}")
        return h

    def enter_argv(self, h: Host) -> list[str]:
        return ["nsenter", "-t", str(h.holder_pid), "--net", "--mount", "--uts", "--"]

    def launch(self, h: Host, log_name: str, argv: list[str]) -> subprocess.Popen:
        """Start a long-lived process inside host `h`'s namespaces, output to its log file,
        in its own session so it outlives this command."""
        with open(os.path.join(self.dir, h.name, log_name), "ab") as log:
            return subprocess.Popen(self.enter_argv(h) + argv, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)

    def _start_etcd(self) -> None:
        st, h = self.state, self.state.store
        if shutil.which("etcd") is None:
            raise LabError("etcd is not installed: run scripts/setup.sh (Debian package "
                           "etcd-server)")
        url = f"http://{h.address}:{ETCD_PORT}"
        proc = self.launch(h, "etcd.log", [
            "etcd", "--name", "store", "--data-dir", os.path.join(self.dir, "store", "etcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "store=http://127.0.0.1:2380", "--enable-v2"])
        st.etcd_pid = proc.pid
        self._save()
        deadline = time.monotonic() + 15
        while True:
            probe = _run(*self.enter_argv(h), "etcdctl", "--endpoints", url,
                         "--dial-timeout=1s", "endpoint", "health", check=False)
            if probe.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("etcd did not start on the store host: "
                               + _tail(os.path.join(self.dir, "store", "etcd.log"), 3))
            time.sleep(0.1)
        self.say(f"store    {h.address:<15} etcd {url}")

    def _start_agent(self, h: Host) -> None:
        st = self.state
        args = [sys.executable, "-m", "overnet", "agent", "--store", st.store_url,
                "--name", h.name, "--advertise", h.address,
                "--default-network", "overlay:multihost", *st.agent_args]
        for key, value in st.flannel.items():
            args += [f"--{key}", str(value)] if value is not True else [f"--{key}"]
        h.agent_pid = self.launch(h, "agent.log", args).pid
        self._save()

    def _wait_agent(self, h: Host, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(h.socket):
                try:
                    Client("unix://" + h.socket, timeout=2).get("/info")
                    break
                except ApiError:
                    pass
            if not _alive(h.agent_pid) or time.monotonic() > deadline:
                raise LabError(f"agent on {h.name} did not start: " + _tail(self.agent_log(h)))
            time.sleep(0.05)
        self.say(f"agent    {h.name:<15} ready (log {self.agent_log(h)})")

    def agent_log(self, h: Host) -> str:
        return os.path.join(self.dir, h.name, "agent.log")

    def restart_agent(self, name: str, sig: int = signal.SIGKILL) -> None:
        """For tests: kill a host's agent and start it again with the same arguments."""
        h = self.host(name)
        if sig == signal.SIGTERM:
            _kill(h.agent_pid)
        else:
            self._sigkill(h.agent_pid)
        self._start_agent(h)
        self._wait_agent(h)

    def restart_store(self, down_for: float = 0.0) -> None:
        """For tests: stop etcd, wait, start it again on the same data."""
        _kill(self.state.etcd_pid)
        time.sleep(down_for)
        self._start_etcd()

    @staticmethod
    def _sigkill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while _alive(pid):
            time.sleep(0.01)

    # --- status ---------------------------------------------------------------------------

    def status(self) -> list[dict]:
        st = self.state
        if st is None:
            return []
        rows = [{"name": "store", "address": st.store.address if st.store else "",
                 "role": "etcd", "alive": _alive(st.etcd_pid), "containers": None}]
        for h in st.hosts:
            alive, count = _alive(h.agent_pid), None
            if alive:
                try:
                    count = Client("unix://" + h.socket, timeout=3).get("/info")["containers"]
                except ApiError:
                    alive = False
            rows.append({"name": h.name, "address": h.address, "role": "agent",
                         "alive": alive, "containers": count})
        return rows

    # --- ssh --------------------------------------------------------------------------------

    def shell_env(self, h: Host) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("OVERNET_HOST", None)
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + ":" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        env["PS1"] = f"root@{h.name}:\\w# "
        env["OVERNET_SANDBOX_HOST"] = h.name
        return env

    def ssh_argv(self, name: str, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
        h = self.host(name)
        if not _alive(h.holder_pid):
            raise LabError(f"host {name} is down: run `overnet sandbox down` then `up`")
        shell = shutil.which("bash") or "/bin/sh"
        if not cmd:
            cmd = [shell, "--norc", "-i"] if shell.endswith("bash") else [shell, "-i"]
        return self.enter_argv(h) + cmd, self.shell_env(h)

    def run(self, name: str, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        argv, env = self.ssh_argv(name, cmd)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    # --- down -------------------------------------------------------------------------------

    def down(self, quiet: bool = False) -> bool:
        """Stop and remove everything. False if there was nothing to take down."""
        st = self.state
        if st is None:
            return False
        say = (lambda m: None) if quiet else self.say
        hosts = list(st.hosts)
        for h in hosts:           # the agent, then the containers it leaves running
            _kill(h.agent_pid)
            for pid in self._recorded_container_pids(h):
                self._sigkill(pid)
        namespaces = [h.netns for h in hosts] + ([st.store.netns] if st.store else [])
        self._kill_inside(namespaces)
        _kill(st.etcd_pid)
        for h in hosts + ([st.store] if st.store else []):
            _kill(h.holder_pid)
            _run("ip", "link", "del", h.veth, check=False)
            _run("ip", "netns", "del", h.netns, check=False)
        _run("ip", "link", "del", st.bridge, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state = None
        say(f"sandbox {self.name} is down")
        return True

    @staticmethod
    def _recorded_container_pids(h: Host) -> list[int]:
        """Containers whose agent is gone: their pids are in the host's state directory."""
        pids = []
        cdir = h.run_dir + "/overnet/containers"
        for cid in os.listdir(cdir) if os.path.isdir(cdir) else []:
            try:
                with open(os.path.join(cdir, cid, "config.json")) as f:
                    c = json.load(f)
            except (OSError, ValueError):
                continue
            if c.get("status") == "running" and alive(c.get("pid", 0), c.get("start_time")):
                pids.append(c["pid"])
        return pids

    def _kill_inside(self, namespaces: list[str]) -> None:
        """Anything still running in a host's network namespace: shells, containers of an
        agent that died, tools left by a user."""
        inodes = set()
        for ns in namespaces:
            try:
                inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
            except OSError:
                pass
        holders = {h.holder_pid for h in self.state.hosts}
        if self.state.store:
            holders.add(self.state.store.holder_pid)
        for pid_s in os.listdir("/proc"):
            if not pid_s.isdigit() or int(pid_s) in holders or int(pid_s) == os.getpid():
                continue
            try:
                ino = os.stat(f"/proc/{pid_s}/ns/net").st_ino
            except OSError:
                continue
            if ino in inodes:
                self._sigkill(int(pid_s))

