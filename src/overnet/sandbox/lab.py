"""The seeds' multi-VM lab on one machine, built from namespaces: the Lab facade.

A lab is an underlay bridge, one or three store hosts running one etcd cluster, and N hosts
each running an overnet agent pointed at every etcd member (see topology.py for the
picture). The parts: topology.py (what a lab is, lab.json), node.py (a host: netns + holder,
ssh into it), procs.py (launching and stopping processes: etcd, agents, dockerd),
clean.py (taking it all down). Lab ties them together and is what the CLI, the tests and
the benchmarks use.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from ..api.client import ApiError, Client
from . import node, procs, runtimes, topology
from .runtimes import agent_args as runtimes_agent_args
from .clean import take_down
from .procs import alive as _alive
from .procs import kill as _kill
from .procs import sigkill
from .procs import tail as _tail

# (bench/ and the CLI import these from here too)
from .topology import DEFAULT_UNDERLAY, ETCD_PORT, LAB_ROOT, Host, LabError, LabState

DEFAULT_NETWORK = "multihost"      # every agent's --default-network, as in the seed


class Lab:
    def __init__(self, name: str = "overnet", root: str = LAB_ROOT,
                 say: Callable[[str], None] = print) -> None:
        if not name.replace("-", "").isalnum() or len(name) > 8:
            raise LabError(f"invalid sandbox name {name!r}: up to 8 letters, digits or '-'")
        self.name = name
        self.dir = os.path.join(root, name)
        self.say = say
        self.state: LabState | None = topology.load(self._file)

    # --- bookkeeping ----------------------------------------------------------------------

    @property
    def _file(self) -> str:
        return os.path.join(self.dir, "lab.json")

    def _save(self) -> None:
        assert self.state is not None
        topology.save(self._file, self.state)

    def _up_state(self) -> LabState:
        if self.state is None:
            raise LabError(f"sandbox {self.name!r} is not up: run `overnet sandbox up`")
        return self.state

    def host(self, name: str) -> Host:
        st = self._up_state()
        for h in st.all_hosts():
            if h.name == name:
                return h
        known = ", ".join(h.name for h in st.hosts + st.stores)
        raise LabError(f"no host {name!r} in sandbox {self.name!r} (hosts: {known})")

    def client(self, host: str) -> Client:
        return Client("unix://" + self.host(host).socket, timeout=60)

    def _log(self, h: Host, name: str) -> str:
        return os.path.join(self.dir, h.name, name)

    # --- up ---------------------------------------------------------------------------------

    def up(self, hosts: int = 2, underlay: str = DEFAULT_UNDERLAY, flannel: dict | None = None,
           agent_args: list[str] | None = None, store_members: int = 1,
           runtimes: list[str] | None = None) -> bool:
        """Build the lab. False (and no change) if it is already up."""
        if self.state is not None:
            return False
        net = topology.check_plan(underlay, hosts, store_members)
        topology.check_free(net, self.name)
        chosen = list(runtimes or [])
        self.state = LabState(name=self.name, underlay=str(net), bridge=f"{self.name}-br",
                              flannel=flannel or {}, runtimes=chosen,
                              agent_args=[*(agent_args or []), *runtimes_agent_args(chosen)])
        try:
            self._build(net, hosts, store_members)
        except BaseException as e:
            self.say(f"up failed: {e}; rolling back")
            self.down(quiet=True)
            raise
        return True

    def _build(self, net: ipaddress.IPv4Network, count: int, store_members: int) -> None:
        st = self._up_state()
        self._save()
        self.say(f"underlay bridge {st.bridge} ({net}, no address on this machine)")
        topology.run("ip", "link", "add", st.bridge, "type", "bridge")
        topology.run("ip", "link", "set", st.bridge, "up")
        procs.check_etcd_installed()
        for i, name in enumerate(topology.store_names(store_members)):
            self._add_host(st.stores, name, topology.store_address(net, i), f"s{i + 1}", net)
        self._start_etcd()
        for i in range(1, count + 1):
            self._add_host(st.hosts, f"net-{i}", topology.host_address(net, i), f"v{i}", net)
        for h in st.hosts:
            self._start_agent(h)
        for h in st.hosts:
            self._wait_agent(h)
        for h in st.hosts:
            self._setup_runtimes(h)

    def _setup_runtimes(self, h: Host) -> None:
        st = self._up_state()
        host_dir = os.path.join(self.dir, h.name)

        def run(argv: list[str]) -> subprocess.CompletedProcess:
            return self.run(h.name, argv, timeout=120)

        if "podman" in st.runtimes:
            runtimes.setup_podman(h, host_dir, DEFAULT_NETWORK, run)
            self.say(f"podman   {h.name:<15} ready (overnet-cni, network {DEFAULT_NETWORK})")
        if "docker" in st.runtimes:
            h.dockerd_pid = self.launch(h, "dockerd.log", runtimes.dockerd_argv(
                os.path.join(self.dir, "docker", h.name), self._cgroup(h))).pid
            self._save()
            runtimes.wait_docker(h, run, lambda: _alive(h.dockerd_pid))
            runtimes.setup_docker(h, host_dir, DEFAULT_NETWORK, run)
            self.say(f"docker   {h.name:<15} ready (plugin overnet, network {DEFAULT_NETWORK})")

    def _cgroup(self, h: Host) -> str:
        return f"overnet-{self.name}-{h.name}"

    def _stop_runtimes(self) -> None:
        """Before the agents go: their containers' CNI DELs and plugin calls still answer."""
        st = self._up_state()
        for h in st.hosts:
            if not _alive(h.holder_pid):
                continue

            def run(argv: list[str], h: Host = h) -> subprocess.CompletedProcess:
                return self.run(h.name, argv, timeout=120)

            if "podman" in st.runtimes:
                runtimes.stop_podman(run)
            if h.dockerd_pid:
                runtimes.stop_docker(run, h.dockerd_pid, self._cgroup(h), _kill)

    def _add_host(self, into: list[Host], name: str, address: str, veth: str,
                  net: ipaddress.IPv4Network) -> None:
        st = self._up_state()
        h = Host(name=name, netns=f"{self.name}-{name}", address=address,
                 veth=f"{self.name}-{veth}")
        into.append(h)  # recorded before it is made: a failure half-way is cleaned up too
        self._save()
        node.make_host(h, st.bridge, net.prefixlen, os.path.join(self.dir, name))
        self._save()
        self.say(f"host {name:<8} {address:<15} namespace {h.netns}")

    def enter_argv(self, h: Host) -> list[str]:
        return h.enter_argv()

    def launch(self, h: Host, log_name: str, argv: list[str]) -> subprocess.Popen:
        """Start a long-lived process inside host `h`'s namespaces, output to its log file,
        in its own session so it outlives this command."""
        return procs.launch(h, self._log(h, log_name), argv)

    # --- etcd -------------------------------------------------------------------------------

    def _start_etcd(self, members: list[Host] | None = None) -> None:
        """Start the etcd of `members` (default: every store host), then wait for each."""
        st = self._up_state()
        for h in members or st.stores:
            argv = procs.etcd_argv(h, st.stores, os.path.join(self.dir, h.name, "etcd"),
                                   f"overnet-{self.name}")
            h.etcd_pid = self.launch(h, "etcd.log", argv).pid
            self._save()
        for h in members or st.stores:
            procs.wait_etcd(h, self._log(h, "etcd.log"))
            self.say(f"store    {h.name:<8} {h.address:<15} etcd {h.client_url}")

    def kill_store_member(self, name: str) -> int:
        """For tests: kill (SIGKILL) the etcd of store host `name`; returns its PID. The
        member stays down until start_store_member(name)."""
        h = self._store_host(name)
        pid = h.etcd_pid
        if not _alive(pid):
            raise LabError(f"etcd on {name} is not running")
        sigkill(pid)
        h.etcd_pid = 0  # gone: its PID must never be signalled again (it may be reused)
        self._save()
        return pid

    def start_store_member(self, name: str) -> None:
        """Start the etcd of store host `name` again on its data (it rejoins the cluster)."""
        h = self._store_host(name)
        if _alive(h.etcd_pid):
            raise LabError(f"etcd on {name} is already running (pid {h.etcd_pid})")
        self._start_etcd([h])

    def store_member_used_by(self, host: str) -> str | None:
        """The store host whose etcd has a client connection from `host` (what its agent
        talks to now), or None."""
        address = self.host(host).address
        for s in self._up_state().stores:
            conns = self.run(s.name, ["ss", "-Htn", "state", "established",
                                      f"( sport = :{ETCD_PORT} )"]).stdout
            if any(line.split()[-1].rsplit(":", 1)[0] == address
                   for line in conns.splitlines() if line.strip()):
                return s.name
        return None

    def _store_host(self, name: str) -> Host:
        st = self._up_state()
        for h in st.stores:
            if h.name == name:
                return h
        raise LabError(f"no store host {name!r} in sandbox {self.name!r} "
                       f"(store hosts: {', '.join(h.name for h in st.stores)})")

    def restart_store(self, down_for: float = 0.0) -> None:
        """For tests: stop every etcd member, wait, start them again on the same data."""
        st = self._up_state()
        for h in st.stores:
            _kill(h.etcd_pid)
        time.sleep(down_for)
        self._start_etcd()

    # --- agents -----------------------------------------------------------------------------

    def _start_agent(self, h: Host) -> None:
        st = self._up_state()
        args = [sys.executable, "-m", "overnet", "agent", "--store", st.store_url,
                "--name", h.name, "--advertise", h.address,
                "--default-network", f"overlay:{DEFAULT_NETWORK}", *st.agent_args]
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
        return self._log(h, "agent.log")

    def restart_agent(self, name: str, sig: int = signal.SIGKILL) -> None:
        """For tests: kill a host's agent and start it again with the same arguments."""
        h = self.host(name)
        if sig == signal.SIGTERM:
            _kill(h.agent_pid)
        else:
            sigkill(h.agent_pid)
        self._start_agent(h)
        self._wait_agent(h)

    @staticmethod
    def _sigkill(pid: int) -> None:
        sigkill(pid)

    # --- status -----------------------------------------------------------------------------

    def status(self) -> list[dict]:
        st = self.state
        if st is None:
            return []
        rows = [{"name": h.name, "address": h.address, "role": "etcd",
                 "alive": _alive(h.etcd_pid), "containers": None} for h in st.stores]
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
        env = node.shell_env(h)
        if self.state is not None and "podman" in self.state.runtimes:
            env.update(runtimes.podman_env(os.path.join(self.dir, h.name)))
        return env

    def ssh_argv(self, name: str, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
        argv, _ = node.ssh_argv(self.host(name), cmd)
        return argv, self.shell_env(self.host(name))

    def run(self, name: str, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        argv, env = self.ssh_argv(name, cmd)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    # --- down -------------------------------------------------------------------------------

    def down(self, quiet: bool = False) -> bool:
        """Stop and remove everything. False if there was nothing to take down."""
        if self.state is None:
            return False
        self._stop_runtimes()
        take_down(self.state, self.dir)
        self.state = None
        if not quiet:
            self.say(f"sandbox {self.name} is down")
        return True
