"""The endpoint service: the one way anything joins a network on this host.

The built-in runner, the CNI plugin and the Docker plugin all call `attach`, `detach` and
`check`. An attach is journalled (agent/state.py) before its first side effect, so that a
restarted agent finishes removing whatever a crash left half-made. A detach removes the
kernel state first and then the store records; records the store cannot take now are owed
(kept on disk) and deleted once it answers.

Addresses are unique by construction: an endpoint's store key is its address in its network,
claimed with create-if-absent in the same transaction as its service name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from ..crashpoints import crashpoint
from ..drivers import Driver, HostInfo, RemotePeer
from ..errors import Conflict, Invalid, NotFound, OvernetError, Unavailable
from ..ipam import pools
from ..ipam.allocator import HostAllocator
from ..observe.events import EventLog, endpoint_attrs
from ..store import keys
from ..store.base import Absent, Delete, Put, Store, StoreError, ValueIs
from ..store.records import EndpointRecord, NetworkRecord, ServiceRecord
from .endpoint_recovery import Recovery, attachment, placeholder
from .membership import Membership
from .networks import NAME_RE, NetworkService
from .state import ATTACHED, CONFLICT, LocalEndpoint, LocalState
from .view import ClusterView

log = logging.getLogger(__name__)

CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
RUNTIMES = ("overnet", "cni", "docker", "podman", "containerd")


@dataclass
class AttachRequest:
    network: str
    container_id: str
    netns: str
    ifname: str = "eth0"
    name: str = ""
    aliases: list[str] = field(default_factory=list)
    ip: str | None = None
    mac: str | None = None
    runtime: str = "overnet"
    service: str = ""          # a service name to claim with the endpoint (unique per network)
    handover: str = ""         # Docker: leave the container end in the host namespace under
                               # this name, unconfigured; the runtime moves it in itself
    held: bool = False         # `ip` was set aside with hold_address(): take it

    def validate(self) -> None:
        if not CONTAINER_ID_RE.match(self.container_id or ""):
            raise Invalid(f"invalid container_id {self.container_id!r}: 1-128 letters, digits, "
                          "'_', '.' or '-'")
        if not IFNAME_RE.match(self.ifname or "") or self.ifname in (".", ".."):
            raise Invalid(f"invalid ifname {self.ifname!r}: 1-15 letters, digits, '_', '.' "
                          "or '-'")
        if not self.netns.startswith("/"):
            raise Invalid(f"invalid netns {self.netns!r}: expected an absolute path")
        for what, label in [("name", self.name), ("service", self.service)] + \
                [("alias", a) for a in self.aliases]:
            if label and not NAME_RE.match(label):
                raise Invalid(f"invalid {what} {label!r}: use 1-63 letters, digits, '_' or "
                              "'-', starting with a letter or digit")
        if self.handover and not IFNAME_RE.match(self.handover):
            raise Invalid(f"invalid handover {self.handover!r}: 1-15 letters, digits, '_', "
                          "'.' or '-'")
        if self.runtime not in RUNTIMES:
            raise Invalid(f"invalid runtime {self.runtime!r}: one of {', '.join(RUNTIMES)}")


class EndpointService(Recovery):
    def __init__(self, *, store: Store, view: ClusterView, networks: NetworkService,
                 allocator: HostAllocator, state: LocalState, dp, host: HostInfo,
                 membership: Membership, changed: Callable[[str], Awaitable[None]]) -> None:
        self.store = store
        self.membership = membership   # this host's records on the networks it is on
        self.view = view
        self.networks = networks
        self.allocator = allocator
        self.state = state
        self.dp = dp
        self.host = host
        self.changed = changed         # reconcile one network now (peers, names)
        self.local: dict[tuple[str, str], LocalEndpoint] = {}
        # part of a local network's subnet that is ours to give out (the rest: other IPAMs)
        self.ranges: dict[str, ipaddress.IPv4Network] = {}
        self.held: dict[str, set[str]] = {}   # net id -> addresses set aside (Docker's IPAM)
        self._ref_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._peers: dict[str, tuple[list, frozenset[RemotePeer]]] = {}   # net id -> (of)
        self.events = EventLog(host.name)    # the agent's, once it is wired

    # --- reads ---------------------------------------------------------------------------

    def find(self, container_id: str, ifname: str = "eth0") -> LocalEndpoint | None:
        return self.local.get((container_id, ifname))

    def get(self, container_id: str, ifname: str = "eth0") -> LocalEndpoint:
        ep = self.find(container_id, ifname)
        if ep is None:
            raise NotFound(f"no endpoint {ifname} of container {container_id} on "
                           f"{self.host.name}")
        return ep

    def on_network(self, net_id: str) -> list[LocalEndpoint]:
        return [ep for ep in self.local.values() if ep.network == net_id and ep.ip
                and ep.phase != CONFLICT]

    def used_ips(self, net_id: str) -> set[ipaddress.IPv4Address]:
        """Addresses no new endpoint may take: this host's (any phase) and every address
        the store holds an endpoint key for, admitted or not."""
        used = {ipaddress.IPv4Address(ep.ip) for ep in self.local.values()
                if ep.network == net_id and ep.ip}
        used |= {ipaddress.IPv4Address(ip) for ip in self.held.get(net_id, ())}
        prefix = keys.endpoints(net_id)
        for key in self.view.keys_under(prefix):
            try:
                used.add(ipaddress.IPv4Address(key[len(prefix):]))
            except ValueError:
                pass
        return used

    def taken(self, net_id: str, free: str | None = None) -> Taken:
        """used_ips() asked one address at a time: what a pick looks at, not every address
        of the network (a start would otherwise parse the whole network's keys). `free`: an
        address held for the asking attach (hold_address)."""
        local = {ep.ip for ep in self.local.values() if ep.network == net_id and ep.ip}
        local |= self.held.get(net_id, set())
        free = free if free in self.held.get(net_id, ()) else None
        return Taken(local, keys.endpoints(net_id), self.view.items, free)

    def peers(self, net: NetworkRecord) -> frozenset[RemotePeer]:
        """The network's remote endpoints, made again only when its admitted endpoints
        changed (a pass for its hosts' or services' changes reads the same)."""
        eps = self.view.endpoints(net.id)
        cached = self._peers.get(net.id)
        if cached is None or cached[0] is not eps:
            if len(self._peers) > 1024:
                self._peers.clear()
            cached = self._peers[net.id] = (eps, frozenset(
                RemotePeer(ep.mac, ep.ip, ep.host_address) for ep in eps
                if ep.host != self.host.name))
        return cached[1]

    # --- attach --------------------------------------------------------------------------

    def _lock(self, ref: tuple[str, str]) -> asyncio.Lock:
        return self._ref_locks.setdefault(ref, asyncio.Lock())

    async def attach(self, req: AttachRequest) -> LocalEndpoint:
        req.validate()
        net = self.networks.find(req.network)
        driver = self.networks.driver(net)
        if not driver.needs_address:
            raise Invalid(f"network {net.name} gives containers no interface to attach")
        ref = (req.container_id, req.ifname)
        # the network's records stay in the mirror's scope while its addresses are picked
        async with self.view.mirror.hold(net.id), self._lock(ref):
            if ref in self.local:
                raise Conflict(f"container {req.container_id} already has {req.ifname} "
                               f"attached (network {self.local[ref].network_name})")
            # A hand-over's namespace may not exist yet: Docker makes it when the container
            # starts, after Join, and moves the device in then.
            if not req.handover and not await self.dp.is_netns(req.netns):
                raise Invalid(f"invalid netns {req.netns!r}: not a network namespace")
            ep = await self._reserve(net, driver, req)
            crashpoint("attach:reserved")
            try:
                # One after the other: side by side (the store's round trip during the
                # kernel work) measured slower, 9-13 ms against 8, both halves competing for
                # the GIL and two CPUs. The address is claimed in the store before it is used.
                if driver.publishes:
                    await self._publish(net, ep)
                await self._plug(net, driver, ep)
                crashpoint("attach:both")
                ep.phase = ATTACHED
                self.state.save_endpoint(ep)
            except BaseException as e:
                await asyncio.shield(self._teardown(net, ep))
                await asyncio.shield(self._changed_quietly(net.id))   # e.g. its namespace
                raise _user_error(e, f"attaching {req.ifname} of {req.container_id} to "
                                     f"{net.name}") from None
        self.events.emit("network", "attach", net.name, **endpoint_attrs(ep))
        await self.changed(net.id)
        return ep

    @staticmethod
    async def _plug(net: NetworkRecord, driver: Driver, ep: LocalEndpoint) -> None:
        await driver.attach(net, attachment(ep))
        crashpoint("attach:kernel")

    async def _changed_quietly(self, net_id: str) -> None:
        try:
            await self.changed(net_id)
        except Exception as e:   # noqa: BLE001 - the resync tries again
            log.warning("network %s: reconcile after a failed attach: %s", net_id[:12], e)

    async def _reserve(self, net: NetworkRecord, driver: Driver,
                       req: AttachRequest) -> LocalEndpoint:
        """Pick the address and journal the endpoint, before any side effect."""
        ep_id = secrets.token_hex(32)
        ep = LocalEndpoint(
            id=ep_id, network=net.id, network_name=net.name, driver=net.driver,
            container_id=req.container_id, ifname=req.ifname, netns=req.netns,
            runtime=req.runtime, name=req.name, aliases=list(req.aliases),
            service=req.service, prefixlen=net.network.prefixlen, gateway=net.gateway,
            mtu=driver.mtu(net), host_ifname="veth" + ep_id[:7] if driver.host_side else "",
            created=time.time(), handover=req.handover)
        async with self.allocator.lock(net.id):
            ip = await self._allocate(net, driver, req.ip, req.held)
            self.unhold(net.id, str(ip))
            ep.ip = str(ip)
            ep.mac = (req.mac or pools.mac_for(ip)).lower()
            if driver.publishes:
                self._stage_records(net, ep)
            self.local[ep.ref] = ep
            # the values _publish is about to write are in the journal too: ours to delete
            self.state.save_endpoint(ep)
        return ep

    async def hold_address(self, network: str, ip: str | None = None
                           ) -> tuple[NetworkRecord, str]:
        """Set an address aside for an attach to come (AttachRequest(ip=..., held=True)):
        Docker's IPAM hands out the address before the endpoint exists."""
        net = self.networks.find(network)
        driver = self.networks.driver(net)
        async with self.allocator.lock(net.id):
            addr = str(await self._allocate(net, driver, ip))
            self.held.setdefault(net.id, set()).add(addr)
        return net, addr

    def unhold(self, net_id: str, ip: str) -> bool:
        """Give back a held address; False if it was not held."""
        held = self.held.get(net_id, set())
        if ip not in held:
            return False
        held.discard(ip)
        if not held:
            self.held.pop(net_id, None)
        return True

    async def _allocate(self, net: NetworkRecord, driver: Driver, requested: str | None,
                        held: bool = False) -> ipaddress.IPv4Address:
        # an address held by hold_address() is set aside for this very attach
        used = self.taken(net.id, requested if held else None)
        if requested:
            try:
                ip = ipaddress.IPv4Address(requested)
            except ValueError:
                raise Invalid(f"invalid ip {requested!r}: expected an IPv4 address") from None
            if ip not in net.network or ip in (net.network.network_address,
                                               net.network.broadcast_address,
                                               ipaddress.IPv4Address(net.gateway)):
                raise Invalid(f"invalid ip {requested}: not a usable address of {net.subnet}")
            if ip in used:
                raise Conflict(f"address {ip} is already in use on network {net.name}")
            return ip
        try:
            if driver.scope == "global":
                return await self.allocator.allocate(net, used)
            ip = pools.pick_address(net.network, ipaddress.IPv4Address(net.gateway),
                                    [self.ranges.get(net.id, net.network)], used)
        except pools.PoolExhausted as e:
            raise Conflict(str(e)) from None
        if ip is None:
            raise Conflict(f"network {net.name}: address pool {net.subnet} is full")
        return ip

    def _record(self, ep: LocalEndpoint) -> EndpointRecord:
        return EndpointRecord(id=ep.id, network=ep.network, container=ep.container_id,
                              name=ep.name or ep.container_id[:12], host=self.host.name,
                              host_address=self.host.address, ip=ep.ip, mac=ep.mac,
                              aliases=[a for a in ep.aliases if a != ep.name],
                              runtime=ep.runtime, ifname=ep.ifname)

    def _stage_records(self, net: NetworkRecord, ep: LocalEndpoint) -> None:
        """The endpoint's store record and its service's, as _publish will write them."""
        ep.record = self._record(ep).to_json().decode()
        if ep.service:
            ep.service_record = ServiceRecord(
                id=secrets.token_hex(32), name=ep.service, network=net.id,
                network_name=net.name, container=ep.container_id, endpoint=ep.id,
                host=self.host.name).to_json().decode()

    async def _publish(self, net: NetworkRecord, ep: LocalEndpoint) -> None:
        """Endpoint (keyed by its address) and service name in one transaction, with the
        records _reserve staged (and journalled), and this host's on the network if it is
        the first endpoint there (agent/membership.py)."""
        ekey = keys.endpoint(net.id, ep.ip)
        compares, ops = [Absent(ekey)], [Put(ekey, ep.record.encode())]
        if ep.service:
            compares.append(Absent(keys.service(net.id, ep.service)))
            ops.append(Put(keys.service(net.id, ep.service), ep.service_record.encode()))
        crashpoint("publish:before-txn")
        result = await self.membership.publish(net.id, compares, ops)
        crashpoint("publish:after-txn")
        if not result.succeeded:
            ep.record = ep.service_record = ""
            self.state.save_endpoint(ep)
            if ep.service and await self.store.get(keys.service(net.id, ep.service)):
                raise Conflict(f"service {ep.service!r} is already published on network "
                               f"{net.name}")
            raise Conflict(f"address {ep.ip} is already held on network {net.name}")
        await self.view.mirror.wait_for(ekey, result.revision)

    async def rename(self, container_id: str, ifname: str, name: str,
                     aliases: list[str]) -> LocalEndpoint:
        """Give an attached endpoint its DNS name and aliases once they are known (Docker
        tells a container's name only after Join)."""
        # The same checks as at attach (the network and namespace are not in question here).
        AttachRequest("n", container_id, "/", ifname, name=name, aliases=aliases).validate()
        ref = (container_id, ifname)
        async with self._lock(ref):
            ep = self.get(container_id, ifname)
            before = (ep.name, list(ep.aliases), ep.record)
            ep.name, ep.aliases = name, list(aliases)
            if ep.phase != ATTACHED or not ep.record:
                self.state.save_endpoint(ep)
                return ep
            key, old = keys.endpoint(ep.network, ep.ip), ep.record.encode()
            ep.record = self._record(ep).to_json().decode()
            self.state.save_endpoint(ep)     # as in _publish: what we write is ours to delete
            result = await self.store.txn([ValueIs(key, old)], [Put(key, ep.record.encode())])
            if not result.succeeded:
                ep.name, ep.aliases, ep.record = before
                self.state.save_endpoint(ep)
                raise Conflict(f"the record of {ep.ip} on network {ep.network_name} changed "
                               "meanwhile")
            await self.view.mirror.wait_for(key, result.revision)
        await self.changed(ep.network)
        return ep

    # --- detach --------------------------------------------------------------------------

    async def detach(self, container_id: str, ifname: str = "eth0") -> bool:
        """Idempotent: True if something was removed."""
        ref = (container_id, ifname)
        async with self._lock(ref):
            ep = self.local.get(ref)
            if ep is None:
                return False
            net = self.networks.get(ep.network) or placeholder(ep)
            await self._teardown(net, ep)
        self._ref_locks.pop(ref, None)
        await self.membership.leave_quietly(ep.network)
        self.events.emit("network", "detach", ep.network_name, **endpoint_attrs(ep))
        await self.changed(ep.network)
        return True

    async def _teardown(self, net: NetworkRecord, ep: LocalEndpoint) -> None:
        """Kernel first, then the store (owed if it does not answer), then the journal."""
        driver = self.networks.drivers.get(ep.driver)
        if driver is not None:
            try:
                await driver.detach(net, attachment(ep))
            except Exception as e:   # the namespace may be gone with its devices
                log.warning("endpoint %s: removing %s: %s", ep.id[:12],
                            ep.host_ifname or ep.ifname, e)
        crashpoint("detach:kernel")
        for key, value in self._records_of(ep):
            try:
                await self.store.txn([ValueIs(key, value)], [Delete(key)])
            except StoreError as e:
                log.warning("store unavailable (%s): deleting %s later", e, key)
                self.state.owe_deletion(key, value)
        self.local.pop(ep.ref, None)
        self.state.remove_endpoint(ep)
        await self._release_blocks(net)

    @staticmethod
    def _records_of(ep: LocalEndpoint) -> list[tuple[str, bytes]]:
        out = []
        if ep.record:
            out.append((keys.endpoint(ep.network, ep.ip), ep.record.encode()))
        if ep.service_record:
            out.append((keys.service(ep.network, ep.service), ep.service_record.encode()))
        return out

    async def _release_blocks(self, net: NetworkRecord) -> None:
        if self.networks.drivers[net.driver].scope != "global" or not net.subnet:
            return
        try:
            async with self.allocator.lock(net.id):
                await self.allocator.release(net, self.used_ips(net.id))
        except StoreError as e:
            log.info("network %s: blocks kept for now (%s)", net.name, e)

    async def converge(self, net: NetworkRecord) -> bool:
        """Attach this host's endpoints on `net` again, which puts right what drifted in the
        kernel (an MTU lowered under them by their vxlan0's, an interface downed): after the
        network's own devices were found drifted and set up again. Not those an attach or a
        detach is busy with: that one waits for the network's pass this runs in, so waiting
        for it here would wait for ever. False if one was left for a later pass."""
        driver = self.networks.driver(net)
        done = True
        for ep in self.on_network(net.id):
            ref = (ep.container_id, ep.ifname)
            if self._lock(ref).locked():
                done = False
                continue
            async with self._lock(ref):
                if self.local.get(ref) is not ep or ep.phase != ATTACHED:
                    continue      # detached or replaced meanwhile
                try:
                    await driver.reattach(net, attachment(ep))
                except Exception as e:   # noqa: BLE001  (its namespace may be going away)
                    log.warning("endpoint %s: repairing %s: %s", ep.id[:12], ep.ifname, e)
        return done

    async def check(self, container_id: str, ifname: str = "eth0") -> list[str]:
        ep = self.get(container_id, ifname)
        if ep.phase != ATTACHED:
            return [f"endpoint is {ep.phase}"]
        net = self.networks.get(ep.network)
        if net is None:
            return [f"network {ep.network_name} no longer exists in the store"]
        driver = self.networks.driver(net)
        problems = []
        if driver.publishes:
            item = self.view.items.get(keys.endpoint(net.id, ep.ip))
            if item is None:
                problems.append(f"the store has no record for {ep.ip} on {net.name}")
            elif item.value.decode(errors="replace") != ep.record:
                problems.append(f"the store's record for {ep.ip} on {net.name} is not this "
                                "endpoint's")
        return problems + await driver.check(net, attachment(ep), self.peers(net)
                                             if driver.publishes else set())

    async def gc(self, runtime: str, keep: set[tuple[str, str]]) -> list[tuple[str, str]]:
        gone = [ref for ref, ep in list(self.local.items())
                if ep.runtime == runtime and ref not in keep]
        for ref in gone:
            await self.detach(*ref)
        return gone


@dataclass
class Taken:
    """Addresses of one network no new endpoint may take: this host's (any phase, and held)
    and every address the store holds an endpoint key for, admitted or not."""
    local: set[str]
    prefix: str              # the network's endpoint keys, ending in the address
    items: Mapping[str, object]
    free: str | None = None  # held for the attach asking: not taken for it

    def __contains__(self, ip: object) -> bool:
        a = str(ip)
        return a != self.free and (a in self.local or self.prefix + a in self.items)


def _user_error(e: BaseException, what: str) -> BaseException:
    if isinstance(e, OvernetError) or not isinstance(e, Exception):
        return e
    if isinstance(e, StoreError):
        return Unavailable(f"{what}: {e}")
    log.error("%s failed", what, exc_info=e)
    return OvernetError(f"{what} failed: {e}")
