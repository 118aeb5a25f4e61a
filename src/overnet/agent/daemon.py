"""The agent: one per host. Serves the local API, writes desired state to the store, and
reconciles this host's kernel to what the store says."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass

from ..dataplane import netns
from ..dataplane.kernel import Kernel
from ..dataplane.worker import KernelThread
from ..discovery import hosts as hostsfile
from ..drivers.base import Attachment, Driver, RemotePeer
from ..drivers.bridge import BridgeDriver
from ..drivers.host import HostDriver
from ..drivers.null import NullDriver
from ..drivers.overlay import OverlayDriver
from ..errors import Conflict, Invalid, NotFound, OvernetError, Unavailable
from ..ipam import pools
from ..ipam.allocator import HostAllocator
from ..runtime import names, process
from ..store import keys, open_store
from ..store.base import Absent, Delete, Put, StoreError, StoreUnavailable
from ..store.keepalive import KeepAlive
from ..store.mirror import Mirror
from ..store.records import (BlockRecord, EndpointRecord, HostRecord, NetworkRecord,
                             ServiceRecord, decode)
from . import hostsubnet
from . import networks as nets
from .processes import ProcessWatcher
from .state import Container, LocalState, NetAttachment

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    store: str
    name: str
    advertise: str
    socket: str = "/run/overnet/overnet.sock"
    state_dir: str = "/run/overnet"
    default_network: str | None = None        # "DRIVER:NAME", e.g. "overlay:multihost"
    default_range: str = pools.DEFAULT_RANGE
    pool_prefix: int = pools.DEFAULT_POOL_PREFIX
    bridge_subnet: str = "172.17.0.0/16"
    vxlan_port: int = 4789
    host_ttl: int = 10                         # seconds: liveness lease
    gc_grace: float = 60.0                     # seconds a host must be dead before GC
    # host subnets (flannel-compatible), see agent/hostsubnet.py
    flannel: bool = False                      # also on when flannel_network is given
    subnet_prefix: str = keys.FLANNEL_PREFIX
    subnet_file: str = "/run/flannel/subnet.env"
    ip_masq: bool = False
    flannel_network: str | None = None         # write this config if the store has none
    flannel_backend: str = "vxlan"


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.state = LocalState(cfg.state_dir)
        self.kernel = KernelThread()
        self.containers: dict[str, Container] = {}
        self.procs = ProcessWatcher(self._on_exit)
        self._clocks: dict[str, asyncio.Lock] = {}
        self._hosts_content: dict[str, str] = {}
        self._hosts_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._dead_since: dict[str, float] = {}
        self.default_net: tuple[str, str] = ("bridge", "bridge")
        self.hostsubnet: hostsubnet.HostSubnet | None = None
        if cfg.default_network:
            driver, _, name = cfg.default_network.partition(":")
            if driver not in ("overlay", "bridge") or not name:
                raise Invalid(f"invalid --default-network {cfg.default_network!r}: "
                              "expected overlay:NAME or bridge:bridge")
            self.default_net = (driver, name)

    # --- start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            ipaddress.IPv4Address(self.cfg.advertise)
        except ValueError:
            raise Invalid(f"invalid --advertise {self.cfg.advertise!r}: expected an IPv4 "
                          "address of this host") from None
        if not nets.NAME_RE.match(self.name):
            raise Invalid(f"invalid --name {self.name!r}: use letters, digits, '_' or '-'")
        await self.kernel.run(lambda k: netns.ensure_private_dir(self.state.netns_dir))
        try:
            mtu = await self.kernel.run(Kernel.underlay_mtu, self.cfg.advertise)
        except Exception:
            raise Invalid(f"--advertise {self.cfg.advertise}: no interface of this host holds "
                          "that address") from None
        try:
            self.store = open_store(self.cfg.store)
        except ValueError as e:
            raise Invalid(str(e)) from None
        await self._connect_store()
        self.mtu = mtu
        # Host subnets first: the bridge network's subnet and MTU come from the lease.
        self.hostsubnet = await hostsubnet.start_if_enabled(self)
        args = (self.kernel, self.cfg.state_dir, self.cfg.advertise, mtu)
        self.overlay = OverlayDriver(*args, port=self.cfg.vxlan_port)
        self.bridge = BridgeDriver(*args, mtu=self.hostsubnet.bridge_mtu
                                   if self.hostsubnet else None)
        self.drivers: dict[str, Driver] = {"overlay": self.overlay, "bridge": self.bridge,
                                           "null": NullDriver(*args), "host": HostDriver(*args)}
        self.allocator = HostAllocator(self.store, self.name)
        await self._check_host_name()
        self.keepalive = KeepAlive(self.store, self.cfg.host_ttl, self._register_host)
        await self.keepalive.start()
        self.mirror = Mirror(self.store, keys.ROOT)
        await self.mirror.start()
        self.view = nets.ClusterView(self.mirror)
        self._events = self.mirror.subscribe()
        ids, bridge_subnet = self.state.builtin_ids(), self.cfg.bridge_subnet
        if self.hostsubnet is not None:
            ids = {**ids, "bridge": self.hostsubnet.bridge_id}
            bridge_subnet = str(self.hostsubnet.subnet)
        self.builtin = nets.builtin_networks(ids, bridge_subnet)
        if self.hostsubnet is not None:
            await self.hostsubnet.ready(self.bridge, self.find_network("bridge"))
        await self._adopt()
        await self._ensure_default_network()
        self._tasks = [asyncio.create_task(coro) for coro in
                       (self._watch_loop(), self._resync_loop(), self._gc_loop())]
        log.info("agent %s up: advertise %s, underlay MTU %d, store %s", self.name,
                 self.cfg.advertise, mtu, self.cfg.store)

    async def stop(self) -> None:
        """Leave containers and the data plane running (a restart must not disturb them);
        drop the liveness lease so peers see this agent go."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.procs.close()
        for obj, method in ((getattr(self, "mirror", None), "stop"),
                            (self.hostsubnet, "stop"),
                            (getattr(self, "keepalive", None), "stop")):
            if obj is not None:
                try:
                    await getattr(obj, method)()
                except Exception as e:  # shutting down: report, go on
                    log.warning("stopping %s: %s", type(obj).__name__, e)
        if getattr(self, "store", None) is not None:
            await self.store.close()
        self.kernel.close()

    async def _connect_store(self, patience: float = 8.0) -> None:
        """Retry for a few seconds (a store that is starting, or busy with many agents
        starting at once), then give up naming the endpoint: never hang."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return await self.store.connect()
            except StoreUnavailable:
                if time.monotonic() >= deadline:
                    raise
                log.warning("store %s not answering yet: retrying", self.cfg.store)
                await asyncio.sleep(0.5)

    async def _check_host_name(self) -> None:
        kv = await self.store.get(keys.host(self.name))
        rec = decode(HostRecord, kv.key, kv.value) if kv else None
        if rec and rec.address != self.cfg.advertise:
            raise Conflict(f"host name {self.name!r} is already registered by a live agent at "
                           f"{rec.address}: pick another --name")

    async def _register_host(self, lease) -> None:
        rec = HostRecord(name=self.name, address=self.cfg.advertise, started=time.time(),
                         mtu=self.mtu)
        await self.store.put(keys.host(self.name), rec.to_json(), lease=lease.id)

    async def _ensure_default_network(self) -> None:
        driver, name = self.default_net
        if driver != "overlay":
            return
        try:
            self.find_network(name)
        except NotFound:
            try:
                await self.create_network(name, "overlay")
                log.info("created default network %s", name)
            except Conflict:
                pass   # another host created it at the same moment

    # --- networks ------------------------------------------------------------------------

    def networks(self) -> list[NetworkRecord]:
        return self.builtin + self.view.networks()

    def find_network(self, ref: str) -> NetworkRecord:
        return nets.find(self.networks(), ref)

    async def create_network(self, name: str, driver: str = "overlay", subnet: str | None = None,
                             gateway: str | None = None) -> NetworkRecord:
        if driver != "overlay":
            raise Invalid(f"invalid driver {driver!r}: networks you create are cluster-wide and "
                          "use -d overlay (every host has one built-in bridge network)")
        rec, rev = await nets.create_overlay(self.store, self.view, name, self.name, subnet,
                                             gateway, self.cfg.default_range,
                                             self.cfg.pool_prefix)
        await self.mirror.wait_revision(rev)
        return rec

    async def remove_network(self, ref: str) -> NetworkRecord:
        net = self.find_network(ref)
        if net.driver != "overlay":
            raise Invalid(f"network {net.name} is built in and cannot be removed")
        local = [c.name for c in self.containers.values() if c.net and c.net.network == net.id
                 and c.net.endpoint]
        if local:
            raise Conflict(f"network {net.name} has attached container(s) {', '.join(local)}: "
                           "remove them first")
        await nets.remove_overlay(self.store, self.view, net)
        self.allocator.forget(net.id)
        return net

    # --- containers ----------------------------------------------------------------------

    def find_container(self, ref: str) -> Container:
        for c in self.containers.values():
            if ref in (c.id, c.name):
                return c
        matches = [c for c in self.containers.values() if ref and c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Invalid(f"container ID prefix {ref!r} is ambiguous: give more characters")
        raise NotFound(f"no such container: {ref}")

    def _clock(self, cid: str) -> asyncio.Lock:
        return self._clocks.setdefault(cid, asyncio.Lock())

    async def create_container(self, req: dict) -> Container:
        cmd = list(req.get("cmd") or ["/bin/sh"])
        name = req.get("name") or ""
        if name:
            try:
                names.validate_name(name)
            except ValueError as e:
                raise Invalid(str(e)) from None
            if any(c.name == name for c in self.containers.values()):
                raise Conflict(f"container name {name!r} is already in use on {self.name}")
        net_ref = req.get("net") or ""
        service = ""
        if req.get("publish_service"):
            service, svc_net, driver = nets.parse_publish(req["publish_service"])
            if svc_net:
                if net_ref and net_ref != svc_net:
                    raise Invalid(f"--net {net_ref} and --publish-service network {svc_net} "
                                  "differ")
                net_ref = svc_net
                try:
                    self.find_network(svc_net)
                except NotFound:
                    try:
                        await self.create_network(svc_net, driver)
                    except Conflict:
                        pass
        net = self.find_network(net_ref or self.default_net[1])
        links = [self._parse_link(s) for s in req.get("links") or []]
        cid = secrets.token_hex(32)
        generated = not name
        if generated:
            name = names.generate_name({c.name for c in self.containers.values()} |
                                       {e.name for e in self.view.endpoints()})
        c = Container(id=cid, name=name, cmd=cmd, created=time.time(),
                      detach=bool(req.get("detach")), auto_remove=bool(req.get("rm")),
                      tty=bool(req.get("tty")), env=dict(req.get("env") or {}), links=links)
        c.privileged = bool(req.get("privileged"))  # type: ignore[attr-defined]
        c.net = NetAttachment(network=net.id, network_name=net.name, driver=net.driver,
                              service=service or name)
        self.containers[cid] = c
        try:
            t_net = time.perf_counter()
            await self._connect(c, net)
            c.net_setup_seconds = time.perf_counter() - t_net   # bench: agent-side set-up
            self._check_links(c)
            self._write_files(c)
            self.state.save(c)
            if c.detach:
                self._spawn(c)
        except BaseException as e:
            await self._teardown(c)
            self.containers.pop(cid, None)
            self.state.remove(cid)
            if isinstance(e, OvernetError) or not isinstance(e, Exception):
                raise
            if isinstance(e, StoreError):
                raise Unavailable(str(e)) from None
            log.exception("starting container %s failed", name)
            raise OvernetError(f"starting container {name} failed: {e}") from None
        return c

    def _parse_link(self, spec: str) -> list[str]:
        target, _, alias = spec.partition(":")
        if not target:
            raise Invalid(f"invalid --link {spec!r}: expected NAME[:ALIAS]")
        return [target, alias or target]

    def _link_target(self, c: Container, target: str) -> EndpointRecord | None:
        for ep in self._net_endpoints(c.net.network):
            if target in (ep.name, ep.container, ep.container[:12]) or target in ep.aliases:
                return ep
        return None

    def _check_links(self, c: Container) -> None:
        for target, _ in c.links:
            if self._link_target(c, target) is None:
                raise NotFound(f"--link {target}: no container named {target!r} on network "
                               f"{c.net.network_name}")

    async def _connect(self, c: Container, net: NetworkRecord) -> None:
        """Network namespace, address, store records, driver: everything but the process."""
        driver = self.drivers[net.driver]
        att = c.net
        if driver.needs_netns:
            c.netns = self.state.netns_path(c.id)
            await self.kernel.run(lambda k: netns.create_netns(c.netns))
        if not driver.needs_address:
            return
        subnet = net.network
        async with self.allocator.lock(net.id):
            used = self._used_ips(net.id)
            if net.driver == "overlay":
                try:
                    ip = await self.allocator.allocate(net, used)
                except pools.PoolExhausted as e:
                    raise Conflict(str(e)) from None
            else:
                ip = pools.pick_address(subnet, ipaddress.IPv4Address(net.gateway), [subnet], used)
                if ip is None:
                    raise Conflict(f"network {net.name}: address pool {net.subnet} is full")
            att.ip, att.prefixlen, att.mac = str(ip), subnet.prefixlen, pools.mac_for(ip)
            att.host_ifname = "veth" + c.id[:7]
            att.endpoint = secrets.token_hex(32)
        if net.driver == "overlay":
            await self._publish(c, net)
        elif net.driver == "bridge" and self.hostsubnet is not None:
            await self.hostsubnet.publish(c, net)   # for --link from other hosts
        await driver.join(net, self._attachment(c))
        if net.driver == "overlay":
            await self._sync_network(net.id)

    async def _publish(self, c: Container, net: NetworkRecord) -> None:
        """Endpoint and service in one transaction: the service name is unique per network."""
        att = c.net
        ep = EndpointRecord(id=att.endpoint, network=net.id, container=c.id, name=att.service,
                            host=self.name, host_address=self.cfg.advertise, ip=att.ip,
                            mac=att.mac, aliases=[c.name] if c.name != att.service else [])
        svc = ServiceRecord(id=secrets.token_hex(32), name=att.service, network=net.id,
                            network_name=net.name, container=c.id, endpoint=att.endpoint,
                            host=self.name)
        skey = keys.service(net.id, att.service)
        result = await self.store.txn(
            [Absent(skey)],
            [Put(keys.endpoint(net.id, att.endpoint), ep.to_json()), Put(skey, svc.to_json())])
        if not result.succeeded:
            att.endpoint = ""
            raise Conflict(f"service {att.service!r} is already published on network {net.name}")
        await self.mirror.wait_revision(result.revision)

    def _attachment(self, c: Container) -> Attachment:
        a = c.net
        return Attachment(c.netns, a.host_ifname, a.ip, a.prefixlen, a.mac)

    def _used_ips(self, net_id: str) -> set[ipaddress.IPv4Address]:
        return {ipaddress.IPv4Address(c.net.ip) for c in self.containers.values()
                if c.net and c.net.network == net_id and c.net.ip}

    def _net_endpoints(self, net_id: str) -> list[EndpointRecord]:
        return self.view.endpoints(net_id)

    # --- processes ------------------------------------------------------------------------

    def _spec(self, c: Container) -> process.ContainerSpec:
        d = self.state.container_dir(c.id)
        env = {"HOSTNAME": c.hostname, **self._link_env(c), **c.env}
        return process.ContainerSpec(
            id=c.id, hostname=c.hostname, netns=c.netns or None, netns_dir=self.state.netns_dir,
            hosts_file=c.hosts_file or os.path.join(d, "hosts"),
            hostname_file=os.path.join(d, "hostname"), resolv_file=os.path.join(d, "resolv.conf"),
            cmd=c.cmd, env=env, privileged=getattr(c, "privileged", False),
            hide=[self.cfg.state_dir, os.path.dirname(self.cfg.socket)])

    def _link_env(self, c: Container) -> dict[str, str]:
        env = {}
        for target, alias in c.links:
            prefix = alias.upper().replace("-", "_").replace(".", "_")
            env[f"{prefix}_NAME"] = f"/{c.name}/{alias}"
            ep = self._link_target(c, target)
            if ep is not None:
                env[f"{prefix}_IP"] = ep.ip
        return env

    def _write_files(self, c: Container) -> None:
        spec = self._spec(c)
        os.makedirs(self.state.container_dir(c.id), exist_ok=True)
        c.hosts_file = spec.hosts_file
        content = self._render_hosts(c)
        process.prepare_files(spec, content)
        self._hosts_content[c.id] = content

    def _peers(self, c: Container) -> list[hostsfile.Peer]:
        """The names a container's /etc/hosts lists: every endpoint of its overlay network."""
        if not (c.net and c.net.driver == "overlay"):
            return []
        return [hostsfile.Peer(ep.ip, ep.name, c.net.network_name, tuple(ep.aliases))
                for ep in self._net_endpoints(c.net.network)]

    def _render_hosts(self, c: Container, peers: list[hostsfile.Peer] | None = None) -> str:
        own_ip = c.net.ip if c.net and c.net.ip else None
        peers = self._peers(c) if peers is None else peers
        links: list[tuple[str, str]] = []
        for target, alias in c.links:
            ep = self._link_target(c, target)
            if ep is not None:
                links.append((ep.ip, f"{alias} {ep.name}" if alias != ep.name else alias))
        return hostsfile.render(own_ip, c.hostname, peers, links)

    def _spawn(self, c: Container) -> None:
        log_path = os.path.join(self.state.container_dir(c.id), "log")
        self._mark_running(c, self.procs.spawn(c.id, self._spec(c), log_path))

    def _mark_running(self, c: Container, pid: int) -> None:
        c.pid, c.start_time = pid, process.proc_start_time(pid) or 0
        c.status, c.started = "running", time.time()
        self.state.save(c)
        self.procs.watch(c.id, pid, c.start_time)

    def _on_exit(self, cid: str, code: int | None) -> None:
        c = self.containers.get(cid)
        if c is not None:
            c.status, c.exit_code, c.finished = "exited", code, time.time()
            asyncio.create_task(self._after_exit(c))

    async def _after_exit(self, c: Container) -> None:
        try:
            await self._teardown(c)
            if c.auto_remove:
                self._forget(c)
            else:
                self.state.save(c)
        finally:
            self.procs.finished(c.id)

    async def container_started(self, ref: str, pid: int) -> Container:
        c = self.find_container(ref)
        if c.status != "created":
            raise Conflict(f"container {c.name} is already {c.status}")
        if not os.path.exists(f"/proc/{pid}"):
            raise Invalid(f"process {pid} does not exist")
        self._mark_running(c, pid)   # a process that already ended is seen exiting at once
        # The CLI mounted whatever file was there when it started the process: swap in the
        # current one, whatever the cache says.
        self._hosts_content.pop(c.id, None)
        await self._refresh_hosts([c])
        return c

    async def stop_container(self, ref: str, timeout: float = 10.0) -> Container:
        c = self.find_container(ref)
        if c.status == "running":
            await self._kill(c, signal.SIGTERM, timeout)
        return c

    async def _kill(self, c: Container, sig: int, timeout: float) -> None:
        await self.procs.stop(c.id, c.pid, c.start_time, sig, timeout)

    async def remove_container(self, ref: str, force: bool = False) -> Container:
        c = self.find_container(ref)
        if c.status == "running":
            if not force:
                raise Conflict(f"container {c.name} is running: stop it first or use rm -f")
            await self._kill(c, signal.SIGKILL, 5)
        await self._teardown(c)
        self._forget(c)
        return c

    def _forget(self, c: Container) -> None:
        self.containers.pop(c.id, None)
        self._hosts_content.pop(c.id, None)
        self.procs.forget(c.id)
        self._clocks.pop(c.id, None)
        self.state.remove(c.id)

    def logs(self, ref: str) -> bytes:
        c = self.find_container(ref)
        try:
            with open(os.path.join(self.state.container_dir(c.id), "log"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    async def _teardown(self, c: Container) -> None:
        """Undo _connect. Idempotent: safe after a partial start or a second call."""
        async with self._clock(c.id):
            att = c.net
            if att and att.ip:
                net = self._network_record(att.network)
                if att.endpoint and (att.driver == "overlay" or (
                        att.driver == "bridge" and self.hostsubnet is not None)):
                    await self.store.txn([], [
                        Delete(keys.endpoint(att.network, att.endpoint)),
                        *([Delete(keys.service(att.network, att.service))]
                          if self._owns_service(c) else [])])
                if att.host_ifname and net is not None:
                    await self.drivers[att.driver].leave(net, self._attachment(c))
                att.ip = att.endpoint = ""
                if att.driver == "overlay" and net is not None:
                    async with self.allocator.lock(net.id):
                        await self.allocator.release(net, self._used_ips(net.id))
                    await self._sync_network(net.id)
            if c.netns:
                path, c.netns = c.netns, ""
                await self.kernel.run(lambda k: (k.forget(path), netns.delete_netns(path)))

    def _owns_service(self, c: Container) -> bool:
        key = keys.service(c.net.network, c.net.service)
        item = self.mirror.items.get(key)
        rec = decode(ServiceRecord, key, item.value) if item else None
        return rec is not None and rec.container == c.id

    def _network_record(self, net_id: str) -> NetworkRecord | None:
        for n in self.builtin:
            if n.id == net_id:
                return n
        return self.view.network(net_id)

    # --- reconcile --------------------------------------------------------------------------

    def _local(self, net_id: str) -> list[Container]:
        return [c for c in self.containers.values()
                if c.net and c.net.network == net_id and c.net.ip]

    async def _reconcile(self, net_id: str) -> None:
        """Make this host's kernel and hosts files match the store for one network."""
        await self._sync_network(net_id)
        await self._refresh_hosts(self._local(net_id))

    async def _sync_network(self, net_id: str) -> None:
        """Make this host's kernel hold exactly the network's remote peers."""
        local = self._local(net_id)
        if any(c.net.driver != "overlay" for c in local):
            return   # only overlay networks hold remote peers in the kernel
        net = self.view.network(net_id)
        if net is None:
            net = NetworkRecord(id=net_id, name="", driver="overlay", subnet="0.0.0.0/0",
                                gateway="0.0.0.0")
        peers = {RemotePeer(ep.mac, ep.ip, ep.host_address)
                 for ep in self._net_endpoints(net_id) if ep.host != self.name}
        try:
            await self.overlay.sync(net, peers, active=bool(local) and net.vni > 0)
        except Exception as e:
            log.warning("network %s: kernel sync failed: %s", net_id[:12], e)

    async def _refresh_hosts(self, containers: list[Container]) -> None:
        """Rewrite the hosts files whose content changed. Running containers get theirs
        swapped atomically (a new file mounted beneath the old one), all in one fork."""
        async with self._hosts_lock:
            swaps: dict[int, tuple[Container, str]] = {}
            peers: dict[str, list[hostsfile.Peer]] = {}     # per network: the same for all
            for c in containers:
                if not c.hosts_file:
                    continue   # still being created: its files are written once connected
                net_id = c.net.network if c.net else ""
                if net_id not in peers:
                    peers[net_id] = self._peers(c)
                content = self._render_hosts(c, peers[net_id])
                if self._hosts_content.get(c.id) == content:
                    continue
                self._hosts_content[c.id] = content
                if c.status != "running" or not c.pid:
                    _write_atomic(c.hosts_file, content)   # not mounted anywhere yet
                    continue
                new = os.path.join(self.state.container_dir(c.id), f"hosts.{time.monotonic_ns()}")
                _write_atomic(new, content)
                swaps[c.pid] = (c, new)
            if not swaps:
                return
            failures = await asyncio.get_running_loop().run_in_executor(
                None, process.replace_hosts_many, {pid: new for pid, (_, new) in swaps.items()})
            for pid, (c, new) in swaps.items():
                old = c.hosts_file
                if pid in failures:
                    log.warning("container %s: could not update /etc/hosts: %s", c.name,
                                failures[pid])
                    self._hosts_content.pop(c.id, None)
                    old = new
                else:
                    c.hosts_file = new
                    self.state.save(c)
                try:
                    os.unlink(old)
                except FileNotFoundError:
                    pass

    async def _watch_loop(self) -> None:
        while True:
            batch = await self._events.get()
            dirty: set[str] = set()
            while True:
                for ev in batch:
                    parts = keys.split(ev.key)
                    if parts[0] in ("endpoints", "services", "networks") and len(parts) > 1:
                        dirty.add(parts[1])
                if self._events.empty():
                    break
                batch = self._events.get_nowait()
            for net_id in dirty:
                await self._reconcile(net_id)

    async def _resync_loop(self, every: float = 30.0) -> None:
        """Level-triggered safety net: re-apply every network with local containers."""
        while True:
            await asyncio.sleep(every)
            for net_id in {c.net.network for c in self.containers.values()
                           if c.net and c.net.driver == "overlay" and c.net.ip}:
                await self._reconcile(net_id)

    async def _gc_loop(self) -> None:
        """Remove endpoints, services and blocks of hosts dead for longer than the grace."""
        every = min(5.0, max(0.2, self.cfg.gc_grace / 4))
        while True:
            await asyncio.sleep(every)
            try:
                await self._collect_garbage()
            except StoreError as e:
                log.warning("garbage collection: %s", e)

    async def _collect_garbage(self) -> None:
        alive = self.view.alive_hosts()
        now = time.monotonic()
        owners: dict[str, list[str]] = {}
        for key, kv in list(self.mirror.items.items()):
            parts = keys.split(key)
            if parts[0] in ("endpoints", "services", "blocks") and len(parts) == 3:
                host = _host_of(parts[0], key, kv.value)
                if host and host not in alive:
                    owners.setdefault(host, []).append(key)
        for host in list(self._dead_since):
            if host not in owners:
                del self._dead_since[host]
        for host, owned in owners.items():
            since = self._dead_since.setdefault(host, now)
            if now - since >= self.cfg.gc_grace:
                log.info("host %s dead for %.0fs: removing its %d records", host, now - since,
                         len(owned))
                await self.store.txn([], [Delete(k) for k in owned])

    # --- adoption ----------------------------------------------------------------------------

    async def _adopt(self) -> None:
        """Rebuild this host's picture after a (re)start without disturbing what still runs."""
        for c in self.state.load_all():
            self.containers[c.id] = c
            try:   # what the container sees now: rewritten only if the cluster moved on
                with open(c.hosts_file) as f:
                    self._hosts_content[c.id] = f.read()
            except OSError:
                pass
            if c.status == "running" and process.alive(c.pid, c.start_time):
                self.procs.watch(c.id, c.pid, c.start_time)
            elif c.status == "running":
                c.status, c.finished = "exited", time.time()
                await self._after_exit(c)
            elif c.status == "created" and c.net and c.net.ip:
                await self._teardown(c)
                self._forget(c)
        active = {c.net.network: self._network_record(c.net.network)
                  for c in self.containers.values() if c.net and c.net.ip
                  and c.net.driver == "overlay"}
        await self.overlay.adopt({k: v for k, v in active.items() if v is not None})
        keep = {c.id[:12] for c in self.containers.values() if c.netns}
        keep |= {net_id[:12] for net_id in active}
        for name in netns.list_netns(self.state.netns_dir):
            if name not in keep:
                log.info("removing namespace %s left by an earlier run", name)
                path = os.path.join(self.state.netns_dir, name)
                await self.kernel.run(lambda k, p=path: netns.delete_netns(p))
        for net_id in active:
            await self._reconcile(net_id)   # catch up with what changed while we were away
        # Records this host owns but no local container backs: an earlier run died mid-way.
        mine = {c.net.endpoint for c in self.containers.values() if c.net and c.net.endpoint}
        stale = [keys.endpoint(ep.network, ep.id) for ep in self.view.endpoints()
                 if ep.host == self.name and ep.id not in mine]
        stale += [keys.service(s.network, s.name) for s in self.view.services()
                  if s.host == self.name and s.container not in self.containers]
        if stale:
            await self.store.txn([], [Delete(k) for k in stale])


def _write_atomic(path: str, content: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(content)
    os.replace(tmp, path)


def _host_of(kind: str, key: str, raw: bytes) -> str | None:
    cls = {"endpoints": EndpointRecord, "services": ServiceRecord, "blocks": BlockRecord}[kind]
    rec = decode(cls, key, raw)
    return getattr(rec, "host", None)

