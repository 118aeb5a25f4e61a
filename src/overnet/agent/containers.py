"""The built-in runner's containers: one client of the endpoint service among others.

The runner makes the container's network namespace and runs its process; the endpoint
service gives it its interface, address, records and peers. A container is written to disk
(status "created") before its namespace exists, so that a restarted agent can always find
and remove whatever a crash left half-made."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from typing import Any, Callable

from ..discovery import hosts as hostsfile
from ..crashpoints import crashpoint
from ..drivers import HostInfo
from ..errors import Conflict, Invalid, NotFound, OvernetError, Unavailable
from ..fsutil import write_atomic
from ..observe.events import EventLog
from ..runtime import names, process
from ..store.base import StoreError
from ..store.records import NetworkRecord
from .endpoints import AttachRequest, EndpointService
from .hostsfiles import HostsFiles
from .networks import NetworkService, lookup, parse_publish
from .processes import ProcessWatcher
from .state import Container, LocalEndpoint, LocalState
from .view import ClusterView

log = logging.getLogger(__name__)

IFNAME = "eth0"


class ContainerService:
    def __init__(self, *, state: LocalState, endpoints: EndpointService,
                 networks: NetworkService, view: ClusterView, dp: Any, host: HostInfo,
                 default_network: str, hidden: list[str], start_expiry: float) -> None:
        self.state = state
        self.endpoints = endpoints
        self.networks = networks
        self.view = view
        self.dp = dp
        self.host = host
        self.default_network = default_network
        self.hidden = hidden             # paths hidden from containers (the agent's own)
        self.start_expiry = start_expiry
        self.containers: dict[str, Container] = {}
        self.procs = ProcessWatcher(self._on_exit)
        self.hosts = HostsFiles()
        # the containers' /etc/resolv.conf per network (None: the host's); set by the agent
        self.resolv_conf: Callable[[NetworkRecord], str | None] = lambda net: None
        self._locks: dict[str, asyncio.Lock] = {}
        self.events = EventLog(host.name)    # the agent's, once it is wired

    # --- lookups -------------------------------------------------------------------------

    def find(self, ref: str) -> Container:
        return lookup(list(self.containers.values()), ref, lambda c: (c.name, c.id),
                      "container")

    def endpoint(self, c: Container) -> LocalEndpoint | None:
        return self.endpoints.find(c.id, IFNAME)

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    # --- create --------------------------------------------------------------------------

    async def create(self, req: dict) -> Container:
        name = req.get("name") or ""
        if name:
            try:
                names.validate_name(name)
            except ValueError as e:
                raise Invalid(str(e)) from None
            if any(c.name == name for c in self.containers.values()):
                raise Conflict(f"container name {name!r} is already in use on {self.host.name}")
        net, service = await self._network_of(req)
        links = [_parse_link(s) for s in req.get("links") or []]
        cid = secrets.token_hex(32)
        if not name:     # a name no other container of its network has
            await self.networks.in_scope(net)
            name = names.generate_name({c.name for c in self.containers.values()} |
                                       {e.name for e in self.view.endpoints(net.id)})
        c = Container(id=cid, name=name, cmd=list(req.get("cmd") or ["/bin/sh"]),
                      created=time.time(), network=net.id, network_name=net.name,
                      service=service or name, detach=bool(req.get("detach")),
                      auto_remove=bool(req.get("rm")), tty=bool(req.get("tty")),
                      privileged=bool(req.get("privileged")), env=dict(req.get("env") or {}),
                      links=links)
        self.containers[cid] = c
        self.state.save(c)          # journal first: a crash from here on is found at start
        crashpoint("create:journalled")
        try:
            await self._connect(c, net)
            self._check_links(c)
            self._write_files(c)
            self.state.save(c)
            crashpoint("create:files")
            if c.detach:
                await self._spawn(c)
        except BaseException as e:
            await asyncio.shield(self._discard(c))
            if isinstance(e, OvernetError) or not isinstance(e, Exception):
                raise
            if isinstance(e, StoreError):
                raise Unavailable(str(e)) from None
            log.exception("starting container %s failed", name)
            raise OvernetError(f"starting container {name} failed: {e}") from None
        return c

    async def _network_of(self, req: dict) -> tuple[NetworkRecord, str]:
        net_ref, service = req.get("net") or "", ""
        if req.get("publish_service"):
            service, svc_net, driver = parse_publish(req["publish_service"])
            if svc_net:
                if net_ref and net_ref != svc_net:
                    raise Invalid(f"--net {net_ref} and --publish-service network {svc_net} "
                                  "differ")
                return await self.networks.ensure(svc_net, driver), service
        return self.networks.find(net_ref or self.default_network), service

    async def _connect(self, c: Container, net: NetworkRecord) -> None:
        driver = self.networks.driver(net)
        t0 = time.perf_counter()
        if driver.needs_netns:
            c.netns = self.state.netns_path(c.id)
            self.state.save(c)
            await self.dp.create_netns(c.netns)
            crashpoint("create:netns")
        t1 = time.perf_counter()
        if driver.needs_address:
            await self.endpoints.attach(AttachRequest(
                network=net.id, container_id=c.id, netns=c.netns, ifname=IFNAME,
                name=c.service, aliases=[c.name] if c.name != c.service else [],
                runtime="overnet", service=c.service if driver.publishes else ""))
        t2 = time.perf_counter()           # bench: agent-side set-up, and its attach alone
        c.net_setup_seconds, c.net_attach_seconds = t2 - t0, t2 - t1

    async def _discard(self, c: Container) -> None:
        await self._disconnect(c)
        self._forget(c)

    async def _disconnect(self, c: Container) -> None:
        """Undo _connect. Idempotent: safe after a partial start or a second call."""
        async with self._lock(c.id):
            await self.endpoints.detach(c.id, IFNAME)
            if c.netns:
                path, c.netns = c.netns, ""
                _kill_netns_processes(path)
                await self.dp.delete_netns(path)

    # --- links and files -----------------------------------------------------------------

    def _candidates(self, c: Container) -> list[tuple[str, str, tuple[str, ...], str]]:
        """(name, container id, aliases, ip) of every endpoint on the container's network."""
        out = [(e.name, e.container, tuple(e.aliases), e.ip)
               for e in self.view.endpoints(c.network)]
        seen = {cid for _, cid, _, _ in out}
        for other in self.containers.values():
            ep = self.endpoint(other)
            if other.network == c.network and ep and other.id not in seen:
                out.append((other.name, other.id, (), ep.ip))
        return out

    def _link_target(self, c: Container, target: str) -> tuple[str, str] | None:
        for name, cid, aliases, ip in self._candidates(c):
            if target in (name, cid, cid[:12]) or target in aliases:
                return name, ip
        return None

    def _check_links(self, c: Container) -> None:
        for target, _ in c.links:
            if self._link_target(c, target) is None:
                raise NotFound(f"--link {target}: no container named {target!r} on network "
                               f"{c.network_name}")

    def render_hosts(self, c: Container, blocks: dict[str, str] | None = None) -> str:
        """`blocks` keeps each network's peer lines for the other containers of one refresh."""
        ep = self.endpoint(c)
        net = self.networks.get(c.network)
        peers = ""
        if net is not None and self.networks.driver(net).discovery:
            blocks = {} if blocks is None else blocks
            if net.id not in blocks:
                blocks[net.id] = hostsfile.peer_lines(
                    hostsfile.Peer(e.ip, e.name, net.name, tuple(e.aliases))
                    for e in self.view.endpoints(net.id))
            peers = blocks[net.id]
        links = []
        for target, alias in c.links:
            found = self._link_target(c, target)
            if found is not None:
                name, ip = found
                links.append((ip, f"{alias} {name}" if alias != name else alias))
        return hostsfile.render(ep.ip if ep else None, c.hostname, peers, links)

    def _write_files(self, c: Container) -> None:
        spec = self.spec(c)
        os.makedirs(self.state.container_dir(c.id), exist_ok=True)
        c.hosts_file = spec.hosts_file
        content = self.render_hosts(c)
        process.prepare_files(spec, content)
        net = self.networks.get(c.network)
        resolv = self.resolv_conf(net) if net is not None else None
        if resolv is not None:
            write_atomic(spec.resolv_file, resolv)
        self.hosts.write_initial(c, content)

    async def refresh_network(self, net_id: str) -> None:
        blocks: dict[str, str] = {}
        await self.hosts.refresh([(c, self.render_hosts(c, blocks))
                                  for c in self.containers.values()
                                  if c.network == net_id and c.status != "exited"])

    async def refresh_all(self) -> None:
        blocks: dict[str, str] = {}
        await self.hosts.refresh([(c, self.render_hosts(c, blocks))
                                  for c in self.containers.values() if c.status != "exited"])

    def spec(self, c: Container) -> process.ContainerSpec:
        d = self.state.container_dir(c.id)
        env = {"HOSTNAME": c.hostname, **self._link_env(c), **c.env}
        return process.ContainerSpec(
            id=c.id, hostname=c.hostname, netns=c.netns or None,
            netns_dir=self.state.netns_dir, hosts_file=c.hosts_file or os.path.join(d, "hosts"),
            hostname_file=os.path.join(d, "hostname"),
            resolv_file=os.path.join(d, "resolv.conf"), cmd=c.cmd, env=env,
            privileged=c.privileged, hide=list(self.hidden))

    def _link_env(self, c: Container) -> dict[str, str]:
        env = {}
        for target, alias in c.links:
            prefix = alias.upper().replace("-", "_").replace(".", "_")
            env[f"{prefix}_NAME"] = f"/{c.name}/{alias}"
            found = self._link_target(c, target)
            if found is not None:
                env[f"{prefix}_IP"] = found[1]
        return env

    # --- processes -----------------------------------------------------------------------

    async def _spawn(self, c: Container) -> None:
        log_path = os.path.join(self.state.container_dir(c.id), "log")
        # Off the event loop: the fork and the child's set-up until its exec take milliseconds
        # (tens under load), and the loop serves other starts and the cluster's changes.
        pid = await asyncio.get_running_loop().run_in_executor(
            None, self.procs.spawn, c.id, self.spec(c), log_path)
        crashpoint("create:spawned")      # a process whose PID never reached the disk
        self._mark_running(c, pid)

    def _mark_running(self, c: Container, pid: int) -> None:
        c.pid, c.start_time = pid, process.proc_start_time(pid) or 0
        c.status, c.started = "running", time.time()
        self.events.emit("container", "start", c.name, id=c.id, pid=pid, runtime="overnet")
        self.state.save(c)
        self.procs.watch(c.id, pid, c.start_time)

    def _on_exit(self, cid: str, code: int | None) -> None:
        c = self.containers.get(cid)
        if c is not None:
            c.status, c.exit_code, c.finished = "exited", code, time.time()
            self.events.emit("container", "die", c.name, id=c.id, exit_code=code)
            asyncio.create_task(self._after_exit(c))

    async def _after_exit(self, c: Container) -> None:
        try:
            await self._disconnect(c)
            if c.auto_remove:
                self._forget(c)
            else:
                self.state.save(c)
        except Exception as e:   # noqa: BLE001 - recovery at the next start finishes it
            log.error("container %s exited; tearing down its network failed: %s", c.name, e)
        finally:
            self.procs.finished(c.id)

    async def started(self, ref: str, pid: int) -> Container:
        """A foreground container's process, started by the CLI: it must really be the
        container's (inside its namespaces), or the agent would act on a stranger."""
        c = self.find(ref)
        if c.status != "created":
            raise Conflict(f"container {c.name} is already {c.status}")
        reason = process.pid_in_container(pid, c.netns or None)
        if reason:
            raise Invalid(f"invalid pid {pid}: {reason}")
        self._mark_running(c, pid)
        self.hosts.forget(c.id)    # the CLI mounted whatever file was there: swap in ours
        await self.hosts.refresh([(c, self.render_hosts(c))])
        return c

    async def stop(self, ref: str, timeout: float = 10.0) -> Container:
        c = self.find(ref)
        if c.status == "running":
            await self.procs.stop(c.id, c.pid, c.start_time, signal.SIGTERM, timeout)
        return c

    async def remove(self, ref: str, force: bool = False) -> Container:
        c = self.find(ref)
        if c.status == "running":
            if not force:
                raise Conflict(f"container {c.name} is running: stop it first or use rm -f")
            await self.procs.stop(c.id, c.pid, c.start_time, signal.SIGKILL, 5)
        await self._discard(c)
        return c

    def _forget(self, c: Container) -> None:
        self.containers.pop(c.id, None)
        self.hosts.forget(c.id)
        self.procs.forget(c.id)
        self._locks.pop(c.id, None)
        self.state.remove(c.id)

    def logs(self, ref: str) -> bytes:
        c = self.find(ref)
        try:
            with open(os.path.join(self.state.container_dir(c.id), "log"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    # --- restart and expiry --------------------------------------------------------------

    def load(self) -> None:
        for c in self.state.load_all():
            self.containers[c.id] = c
            self.hosts.adopt(c)

    async def endpoint_alive(self, ep: LocalEndpoint) -> bool:
        """Is the container behind an endpoint still there? (for EndpointService.recover)"""
        if ep.runtime != "overnet":
            return await self.dp.is_netns(ep.netns)
        c = self.containers.get(ep.container_id)
        return c is not None and self._alive(c)

    def _alive(self, c: Container) -> bool:
        if c.status == "running":
            return process.alive(c.pid, c.start_time)
        return c.status == "created" and not c.detach and \
            time.time() - c.created < self.start_expiry

    async def recover(self) -> None:
        """After the endpoints are recovered: watch the living, remove the rest."""
        for c in list(self.containers.values()):
            if c.status == "running" and process.alive(c.pid, c.start_time):
                self.procs.watch(c.id, c.pid, c.start_time)
            elif c.status == "running":
                c.status, c.finished = "exited", time.time()
                await self._after_exit(c)
            elif c.status == "created" and not self._alive(c):
                log.info("container %s was never started: removing it", c.name)
                await self._discard(c)
            elif c.status == "exited" and (c.netns or self.endpoint(c)):
                await self._disconnect(c)

    def namespaces_in_use(self) -> set[str]:
        return {os.path.basename(c.netns) for c in self.containers.values() if c.netns}

    async def expire_loop(self) -> None:
        """Foreground containers whose start is never reported do not hold an address."""
        while True:
            await asyncio.sleep(max(1.0, self.start_expiry / 4))
            for c in list(self.containers.values()):
                if c.status == "created" and time.time() - c.created >= self.start_expiry:
                    log.warning("container %s was created %.0fs ago and never started: "
                                "removing it", c.name, time.time() - c.created)
                    await self._discard(c)


def _parse_link(spec: Any) -> list[str]:
    if not isinstance(spec, str):
        raise Invalid(f"invalid --link {spec!r}: expected NAME[:ALIAS]")
    target, _, alias = spec.partition(":")
    if not target:
        raise Invalid(f"invalid --link {spec!r}: expected NAME[:ALIAS]")
    return [target, alias or target]


def _kill_netns_processes(netns: str) -> None:
    """Processes left in a container's network namespace by a start that a crash cut short
    (their PID never reached the disk): that namespace is the container's alone."""
    for pid in process.pids_in_netns(netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
