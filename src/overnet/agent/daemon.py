"""The agent: one per host. It wires the parts together, recovers after a restart, and runs
the supervised background work. Each part has its own module:

    networks.py    cluster-wide and built-in networks        endpoints.py  the endpoint service
    containers.py  the built-in runner (a client of it)      reconcile.py  watch + resync
    gc.py          dead hosts' records                       hostsubnet.py flannel leases
    view.py        validated reads of the store              state.py      the local journal

Store and data plane are passed in (or made from the configuration), so the whole agent runs
in unit tests over a MemoryStore and a FakeDataplane.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from typing import Callable

from ..cni.pending import flush_pending_with
from ..dataplane.api import Dataplane
from ..drivers import DRIVERS, Driver, DriverOptions, HostInfo
from ..errors import Conflict, Invalid
from ..ipam.allocator import HostAllocator
from ..observe.counting import counting
from ..observe.observer import Observer
from ..periodic import jittered
from ..store import keys, open_store
from ..store.base import Put, Store, StoreError, StoreUnavailable, ValueIs
from ..store.keepalive import KeepAlive
from ..store.scoped import ScopedMirror
from ..store.records import HostRecord, decode
from . import hostsubnet as hs
from . import memtrim
from .config import AgentConfig
from .containers import ContainerService
from .dns import NetworkDns
from .endpoints import EndpointService
from .gc import GarbageCollector
from .membership import Membership
from .networks import BUILTIN, NAME_RE, NetworkService, builtin_networks
from .reconcile import Reconciler
from .state import LocalState
from .supervise import Supervisor
from .view import ClusterView

log = logging.getLogger(__name__)

NET = "net:"    # reconcile targets of networks: "net:<id>"
TRIM_EVERY = 0.5    # seconds between two looks at whether freed heap memory can go back


class Agent:
    def __init__(self, cfg: AgentConfig, *, store: Store | None = None,
                 dataplane: Dataplane | None = None,
                 host_networks: Callable[[], list[ipaddress.IPv4Network]] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.state = LocalState(cfg.state_dir)
        self.store = store
        self.dp = dataplane
        self.host_networks = host_networks or _host_routes
        self.supervisor = Supervisor()
        self.observer = Observer(cfg.name)     # events, and what metrics need
        self.events = self.observer.events
        self.hostsubnet: hs.HostSubnet | None = None
        self.default_net = _parse_default(cfg.default_network)
        self.mirror: ScopedMirror | None = None
        self.keepalive: KeepAlive | None = None
        self._last_net: dict = {}
        self._started = time.time()     # this run of the agent: its host record says so
        self._in_place: set[str] = set()     # networks whose peers and resolver are in place
        self._drifted: set[str] = set()      # networks whose containers' interfaces want a look
        self._net_locks: dict[str, asyncio.Lock] = {}

    # --- start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        self._check_config()
        if self.dp is None:
            from ..dataplane.api import NetlinkDataplane
            self.dp = NetlinkDataplane()
        await self.dp.ensure_private_dir(self.state.netns_dir)
        try:
            mtu = await self.dp.underlay_mtu(self.cfg.advertise)
        except Exception:
            raise Invalid(f"--advertise {self.cfg.advertise}: no interface of this host holds "
                          "that address") from None
        self.mtu = mtu
        self.host = HostInfo(self.name, self.cfg.advertise, mtu, self.cfg.state_dir)
        if self.store is None:
            try:
                self.store = open_store(self.cfg.store)
            except ValueError as e:
                raise Invalid(str(e)) from None
        self.store = counting(self.store)
        await self._connect_store()
        await self._check_host_name()
        if self.cfg.host_subnets:   # first: the bridge's subnet and MTU come from the lease
            self.hostsubnet = hs.HostSubnet(self.store, self.dp, self.cfg, self.host)
            self.hostsubnet.cluster_events = self.events
            await self.hostsubnet.start()
        self.keepalive = KeepAlive(self.store, self.cfg.host_ttl, self._register_host)
        await self.keepalive.start()
        self.mirror = ScopedMirror(self.store, keep=self._keeps, mine=self._mine)
        await self.mirror.start()
        self.view = ClusterView(self.mirror)
        self._events = self.mirror.subscribe()
        self._observed = self.mirror.subscribe()
        self.observer.seed(self.mirror.items)
        self._build_services()
        if self.hostsubnet is not None:
            bridge = self.networks.find("bridge")
            self.view.local_networks[bridge.id] = self.hostsubnet.cluster_network(bridge)
            # the upper half of the lease goes to flannel-type CNI containers (host-local)
            self.endpoints.ranges[bridge.id] = hs.cni_range(self.hostsubnet.subnet)[1]
            await self.hostsubnet.ready(self.networks.driver(bridge), bridge)
        await self._recover()
        if DRIVERS[self.default_net[0]].creatable:
            await self.networks.ensure(self.default_net[1], self.default_net[0])
        self._start_loops()
        log.info("agent %s up: advertise %s, underlay MTU %d, store %s", self.name,
                 self.cfg.advertise, mtu, self.cfg.store)

    def _check_config(self) -> None:
        try:
            ipaddress.IPv4Address(self.cfg.advertise)
        except ValueError:
            raise Invalid(f"invalid --advertise {self.cfg.advertise!r}: expected an IPv4 "
                          "address of this host") from None
        if not NAME_RE.match(self.name):
            raise Invalid(f"invalid --name {self.name!r}: use letters, digits, '_' or '-'")

    def _build_services(self) -> None:
        assert self.store is not None and self.dp is not None
        self.drivers = self._make_drivers()
        ids, bridge_subnet = self.state.builtin_ids(), self.cfg.bridge_subnet
        if self.hostsubnet is not None:
            ids = {**ids, "bridge": self.hostsubnet.bridge_id}
            bridge_subnet = str(self.hostsubnet.subnet)
        self.allocator = HostAllocator(self.store, self.name)
        self.membership = Membership(
            self.store, self.mirror, self.name,
            HostRecord(name=self.name, address=self.cfg.advertise, mtu=self.mtu).to_json(),
            lambda: self.keepalive.lease.id, self._keeps)
        self.networks = NetworkService(
            self.store, self.view, self.name, self.drivers,
            builtin_networks(ids, bridge_subnet), self.cfg.default_range,
            self.cfg.pool_prefix, self.host_networks)
        self.endpoints = EndpointService(
            store=self.store, view=self.view, networks=self.networks,
            allocator=self.allocator, state=self.state, dp=self.dp, host=self.host,
            membership=self.membership, changed=self._endpoint_changed)
        self.containers = ContainerService(
            state=self.state, endpoints=self.endpoints, networks=self.networks,
            view=self.view, dp=self.dp, host=self.host, default_network=self.default_net[1],
            hidden=[self.cfg.state_dir, os.path.dirname(self.cfg.socket)],
            start_expiry=self.cfg.start_expiry)
        self.gc = GarbageCollector(self.store, self.view, self.name, self.cfg.gc_grace,
                                   self.cfg.block_grace)
        self.dns = NetworkDns(self.view, self.networks) if self.cfg.dns else None
        self.endpoints.events = self.containers.events = self.events
        self.observer.networks = lambda: {ep.network for ep in self.endpoints.local.values()}
        if self.dns is not None:
            self.containers.resolv_conf = self.dns.resolv_conf

    def _make_drivers(self) -> dict[str, Driver]:
        opts = DriverOptions(vxlan_port=self.cfg.vxlan_port)
        if self.hostsubnet is not None:   # the bridge is one routed network across hosts
            opts = DriverOptions(self.cfg.vxlan_port, self.hostsubnet.bridge_mtu, True)
        return {name: cls(self.dp, self.host, opts) for name, cls in DRIVERS.items()}

    def _start_loops(self) -> None:
        rec = self.reconciler = Reconciler(self.cfg.resync_every)
        rec.source(self._events, self._classify)
        rec.on_run = self.observer.reconciled
        rec.route(NET, self.reconcile_network, self._active_networks)
        loops = {"gc": self._gc_loop, "owed-deletions": self._owed_loop,
                 "start-expiry": self.containers.expire_loop,
                 "observe": lambda: self.observer.watch(self._observed),
                 "scope": self.mirror.prune_loop,
                 "memory-trim": lambda: memtrim.trim_loop(TRIM_EVERY, lambda: rec.runs)}
        if self.hostsubnet is not None:
            rec.source(self.hostsubnet.events, lambda e: hs.TARGET)
            rec.route(hs.TARGET, self.hostsubnet.reconcile, self.hostsubnet.active)
            loops.update(self.hostsubnet.loops())
        for name, loop in {**rec.loops(), **loops}.items():
            self.supervisor.start(name, loop)

    async def stop(self) -> dict[str, str]:
        """Leave containers and the data plane running (a restart must not disturb them);
        drop the liveness lease so peers see this agent go. Returns the loops that failed."""
        failed = await self.supervisor.stop()
        for name, err in failed.items():
            log.warning("background loop %s had failed: %s", name, err)
        if hasattr(self, "containers"):
            self.containers.procs.close()
        for part in (self.mirror, self.hostsubnet, self.keepalive):
            if part is not None:
                try:
                    await part.stop()
                except Exception as e:  # noqa: BLE001 - shutting down: report, go on
                    log.warning("stopping %s: %s", type(part).__name__, e)
        if getattr(self, "dns", None) is not None:
            await self.dns.close()
        if self.store is not None:
            await self.store.close()
        if self.dp is not None:
            await self.dp.close()
        return failed

    async def _connect_store(self, patience: float = 8.0) -> None:
        """Retry for a few seconds (a store that is starting, or busy with many agents
        starting at once), then give up naming the endpoint: never hang."""
        assert self.store is not None
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
        assert self.store is not None
        kv = await self.store.get(keys.alive(self.name))
        rec = decode(HostRecord, kv.key, kv.value) if kv else None
        if rec and rec.address != self.cfg.advertise:
            raise Conflict(f"host name {self.name!r} is already registered by a live agent at "
                           f"{rec.address}: pick another --name")

    async def _register_host(self, lease) -> None:
        assert self.store is not None
        rec = HostRecord(name=self.name, address=self.cfg.advertise, started=self._started,
                         mtu=self.mtu).to_json()
        # the durable record only when it changed: a lease granted again (after the store was
        # away longer than the TTL) is news for no other host, and every host receives it
        await self.store.txn([ValueIs(keys.host(self.name), rec)], [],
                             [Put(keys.host(self.name), rec)])
        await self.store.put(keys.alive(self.name), rec, lease=lease.id)
        self.observer.lease("liveness", self.name, lease.id, self.keepalive)
        if self.keepalive is not None and self.keepalive.renewals:
            # this host's presence on its networks went with the old lease: put it again
            if getattr(self, "membership", None) is not None:
                self.membership.renewed()
            if getattr(self, "reconciler", None) is not None:
                self.reconciler.mark(*self._active_networks())

    # --- recovery ------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Rebuild this host's picture after a (re)start without disturbing what still runs:
        load *everything* first, then keep what lives, then remove only what nothing uses."""
        self.endpoints.load()
        self.containers.load()
        await self.mirror.need(*{ep.network for ep in self.endpoints.local.values()})
        active = {ep.network: net for ep in self.endpoints.local.values()
                  if (net := self.networks.get(ep.network)) is not None}
        for driver in self.drivers.values():
            await driver.adopt({k: n for k, n in active.items()
                                if self.networks.driver(n) is driver})
        await self.endpoints.recover(self.containers.endpoint_alive)
        await self.containers.recover()
        keep = self.containers.namespaces_in_use()
        for ep in self.endpoints.local.values():
            net = self.networks.get(ep.network)
            path = self.networks.driver(net).namespace(net) if net else None
            if path:
                keep.add(os.path.basename(path))
        for name in await self.dp.list_netns(self.state.netns_dir):
            if name not in keep:
                log.info("removing namespace %s left by an earlier run", name)
                await self.dp.delete_netns(os.path.join(self.state.netns_dir, name))
        # DELs the CNI plugin could not hand over while this agent was down
        await flush_pending_with(self.endpoints.detach,
                                 os.path.join(os.path.dirname(self.cfg.socket), "cni-pending"))
        for net_id in {ep.network for ep in self.endpoints.local.values()} | set(active):
            await self.reconcile_network(NET + net_id, True)
        await self.containers.refresh_all()

    # --- reconcile -----------------------------------------------------------------------

    async def _endpoint_changed(self, net_id: str) -> None:
        """After a local attach or detach. The first endpoint of a network on this host waits
        for its peers and resolver, the last one for their removal; in between, the other
        containers' names follow in the background (coalesced: a burst of starts refreshes
        their hosts files once, off every start's path)."""
        if net_id in self._in_place and self.endpoints.on_network(net_id):
            self.reconciler.mark(NET + net_id)
        else:
            await self.reconcile_network(NET + net_id, False)

    async def reconcile_network(self, target: str, verify: bool) -> None:
        """Make this host's kernel, resolver and hosts files match the store for one network
        (one pass at a time per network: an attach and the watch may both ask at once)."""
        net_id = target[len(NET):]
        net = self.networks.get(net_id) or self._last_net.get(net_id)
        if net is None:
            return
        self._last_net[net_id] = net
        async with self._net_locks.setdefault(net_id, asyncio.Lock()):
            await self._reconcile(net, verify)

    async def _reconcile(self, net, verify: bool) -> None:
        net_id = net.id
        driver = self.networks.driver(net)
        gone = self.networks.get(net_id) is None
        local = bool(self.endpoints.on_network(net_id))
        active = local and not gone
        if active and driver.publishes:
            try:
                await self.membership.ensure(net_id)
                # hosts of older agents: their endpoints are rejected (no membership)
                await self.membership.adopt(net_id, self.view.owners(net_id)
                                            - self.view.hosts(net_id).keys()
                                            if self.view.rejects(net_id) else ())
            except StoreError as e:     # the resync tries again; peers are programmed still
                log.warning("network %s: memberships not written: %s", net.name, e)
        if self.dns is not None and not active:
            await self.dns.update(net, False)    # its sockets would hold the namespace
        if driver.publishes:
            # only a host with endpoints on the network programs its peers: the others would
            # re-admit the whole network on each of its changes for nothing
            peers = self.endpoints.peers(net) if active else set()
            if await driver.sync(net, peers, active=local, verify=verify):
                self._drifted.add(net_id)
            self.observer.peers(net, peers if local else set())
        if net_id in self._drifted and (not active or await self.endpoints.converge(net)):
            self._drifted.discard(net_id)
        if self.dns is not None and active:
            await self.dns.update(net, True)
        if active:
            self._in_place.add(net_id)
        else:
            self._in_place.discard(net_id)
        await self.containers.refresh_network(net_id)

    def _classify(self, ev) -> str | None:
        """The reconcile target of a store event (and a first look at its record)."""
        if ev.type == "put":
            self.view.inspect(ev.key)
        parts = keys.split(ev.key)
        lost = self.membership.lost(ev.key, ev.mod_revision) if ev.type == "delete" else None
        if parts[0] == "networks" and len(parts) > 1 and not self._holds(parts[1]):
            return None     # every host has every network record; most have nothing on it
        if parts[0] in ("endpoints", "services", "networks", "blocks", "members") \
                and len(parts) > 1:
            return NET + parts[1]
        return NET + lost if lost else None

    def _holds(self, net_id: str) -> bool:
        """Whether this host has anything of a network: endpoints, or what a pass has yet to
        remove (its peers, resolver or devices)."""
        return net_id in self._in_place or net_id in self._drifted or self._keeps(net_id)

    async def in_scope(self, *nets) -> None:
        """Before a read of networks' records that is not for this host's own containers
        (the API's, `doctor`'s): see NetworkService.in_scope."""
        await self.networks.in_scope(*nets)

    def _keeps(self, net_id: str) -> bool:
        """Whether a network stays in the mirror's scope: this host has an endpoint on it."""
        return any(ep.network == net_id for ep in self.endpoints.local.values())

    def _mine(self, key: str) -> bool:
        """Whether the mirror holds an endpoint, service or membership record of this host:
        with no local endpoint on its network, a stray the sweep has yet to remove (this
        host's address blocks stay with it, in scope or not)."""
        if key.startswith((keys.MEMBERS, keys.PRESENT)):
            return self.membership.mine(key)
        return key.startswith((keys.ENDPOINTS, keys.SERVICES)) and \
            getattr(self.view.record_at(key), "host", None) == self.name

    def _active_networks(self) -> set[str]:
        return {NET + ep.network for ep in self.endpoints.local.values()}

    async def _gc_loop(self) -> None:
        every = min(5.0, max(0.2, self.cfg.gc_grace / 4))
        while True:
            await asyncio.sleep(jittered(every))
            try:
                await self.gc.collect()
            except StoreError as e:
                log.warning("garbage collection: %s", e)

    async def _owed_loop(self) -> None:
        """Store deletions owed since an outage, and records of ours that nothing backs."""
        rounds = 0
        while True:
            await asyncio.sleep(jittered(1.0))
            rounds += 1
            try:
                await self.endpoints.settle_owed()
                if rounds % 5 == 0:
                    await self.endpoints.sweep()
            except StoreError:
                pass    # still unreachable: next time




def _parse_default(value: str | None) -> tuple[str, str]:
    if not value:
        return "bridge", "bridge"
    driver, _, name = value.partition(":")
    if driver not in DRIVERS or not name or not (DRIVERS[driver].creatable or
                                                 BUILTIN.get(name) == driver):
        raise Invalid(f"invalid --default-network {value!r}: expected overlay:NAME or "
                      "bridge:bridge")
    return driver, name


def _host_routes() -> list[ipaddress.IPv4Network]:
    """Networks this host routes itself (its own namespace's routing table): a network
    created over one of them would cut the host off from it."""
    out = []
    try:
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                fields = line.split()
                dst, mask = int(fields[1], 16), int(fields[7], 16)
                if mask == 0:
                    continue            # the default route overlaps everything
                addr = ipaddress.IPv4Address(dst.to_bytes(4, "little"))
                plen = bin(mask).count("1")
                out.append(ipaddress.IPv4Network(f"{addr}/{plen}", strict=False))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return out
