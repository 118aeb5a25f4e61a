"""Networks: the cluster-wide ones in the store and each host's built-in ones."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import time
from typing import Callable

from ..drivers import DRIVERS, Driver
from ..errors import Conflict, Invalid, NotFound
from ..ipam import pools
from ..store import keys
from ..store.base import Absent, Delete, Put, Store
from ..store.records import NameClaim, NetworkRecord, PoolClaim, VniClaim, decode
from .view import ClusterView

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")
BUILTIN = {"none": "null", "host": "host", "bridge": "bridge"}
DEFAULT_DRIVER = "overlay"    # `network create` without -d
FIRST_VNI = 256
MAX_VNI = (1 << 24) - 1


def validate_network_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid(f"invalid network name {name!r}: use 1-63 letters, digits, '_' or '-', "
                      "starting with a letter or digit")
    if name in BUILTIN:
        raise Conflict(f"network name {name!r} is reserved for the built-in network")


def builtin_networks(ids: dict[str, str], bridge_subnet: str) -> list[NetworkRecord]:
    subnet = ipaddress.IPv4Network(bridge_subnet)
    return [
        NetworkRecord(id=ids["none"], name="none", driver="null", subnet="", gateway=""),
        NetworkRecord(id=ids["host"], name="host", driver="host", subnet="", gateway=""),
        NetworkRecord(id=ids["bridge"], name="bridge", driver="bridge", subnet=str(subnet),
                      gateway=str(pools.default_gateway(subnet))),
    ]


def find(networks: list[NetworkRecord], ref: str) -> NetworkRecord:
    """By name, full ID or unique ID prefix, as Docker resolves them."""
    return lookup(networks, ref, lambda n: (n.name, n.id), "network")


def lookup(items: list, ref: str, names: Callable, what: str):
    """One item by exact name or ID, else by unique ID prefix (Docker's rule)."""
    for item in items:
        if ref in names(item):
            return item
    matches = [i for i in items if ref and names(i)[1].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise Invalid(f"{what} ID prefix {ref!r} is ambiguous: give more characters")
    raise NotFound(f"{what} {ref!r} not found" if what == "network"
                   else f"no such {what}: {ref}")


class NetworkService:
    def __init__(self, store: Store, view: ClusterView, host: str, drivers: dict[str, Driver],
                 builtin: list[NetworkRecord], default_range: str, pool_prefix: int,
                 host_networks: Callable[[], list[ipaddress.IPv4Network]]) -> None:
        self.store = store
        self.view = view
        self.host = host
        self.drivers = drivers
        self.builtin = builtin
        self.default_range = default_range
        self.pool_prefix = pool_prefix
        self.host_networks = host_networks

    def all(self) -> list[NetworkRecord]:
        return self.builtin + self.view.networks()

    def find(self, ref: str) -> NetworkRecord:
        return find(self.all(), ref)

    def get(self, net_id: str) -> NetworkRecord | None:
        return next((n for n in self.builtin if n.id == net_id), None) or \
            self.view.network(net_id)

    def driver(self, net: NetworkRecord) -> Driver:
        return self.drivers[net.driver]

    async def in_scope(self, *nets: NetworkRecord) -> None:
        """Bring cluster-wide networks' records into the mirror's scope (listed, then
        watched a while), for a read of networks this host may have no container on."""
        await self.view.mirror.need(*(n.id for n in nets if self.driver(n).publishes))

    def is_builtin(self, net: NetworkRecord) -> bool:
        return any(n.id == net.id for n in self.builtin)

    async def ensure(self, name: str, driver: str = DEFAULT_DRIVER) -> NetworkRecord:
        """The network `name`, created if no host has made it yet."""
        try:
            return self.find(name)
        except NotFound:
            pass
        try:
            return await self.create(name, driver)
        except Conflict:
            pass      # another host made it at the same moment: wait until the mirror has it
        kv = await self.store.get(keys.name(name))
        claim = decode(NameClaim, kv.key, kv.value) if kv is not None else None
        if claim is not None:
            await self.view.mirror.wait_for(keys.network(claim.id), kv.mod_revision, timeout=5)
        return self.find(name)

    async def create(self, name: str, driver: str = DEFAULT_DRIVER, subnet: str | None = None,
                     gateway: str | None = None) -> NetworkRecord:
        cls = self.drivers.get(driver) if isinstance(driver, str) else None
        if cls is None or not cls.creatable:
            choices = ", ".join(sorted(n for n, d in self.drivers.items() if d.creatable))
            raise Invalid(f"invalid driver {driver!r}: networks you create are cluster-wide "
                          f"and use -d {choices} (every host has one built-in bridge network)")
        validate_network_name(name)
        chosen, gw_chosen = self._parse_subnet(subnet, gateway)
        rec, rev = await self._claim(name, driver, chosen, gw_chosen)
        await self.view.mirror.wait_for(keys.network(rec.id), rev)
        return rec

    def _parse_subnet(self, subnet: str | None, gateway: str | None
                      ) -> tuple[ipaddress.IPv4Network | None, ipaddress.IPv4Address | None]:
        if gateway and not subnet:
            raise Invalid(f"--gateway {gateway} needs a --subnet to go with it")
        if not subnet:
            return None, None
        try:
            chosen = pools.parse_subnet(subnet)
            pools.check_no_overlap(chosen, self.host_networks())
            return chosen, pools.parse_gateway(gateway, chosen) if gateway else None
        except pools.IpamError as e:
            raise Invalid(str(e)) from None

    async def _claim(self, name: str, driver: str, chosen: ipaddress.IPv4Network | None,
                     gw_chosen: ipaddress.IPv4Address | None) -> tuple[NetworkRecord, int]:
        """Name, VNI and (default) pool in one transaction; retried when another host won
        a VNI or pool race. Returns the record and the revision it was written at."""
        net_id = secrets.token_hex(32)
        for _ in range(20):
            # the claims are read from the store itself: no agent mirrors them
            if await self.store.get(keys.name(name)) is not None:
                raise Conflict(f"network with name {name!r} already exists")
            vni_keys, pool_keys = await asyncio.gather(self.store.list(keys.VNIS),
                                                       self.store.list(keys.POOLS))
            used = {v for kv in vni_keys[0] if (v := keys.parse_vni_key(kv.key)) is not None}
            vni = next(v for v in range(FIRST_VNI, MAX_VNI) if v not in used)
            claimed = [p for kv in pool_keys[0]
                       if (p := keys.try_parse_cidr_key(kv.key[len(keys.POOLS):]))]
            try:
                sub = chosen or pools.next_free_pool(
                    [n.network for n in self.view.networks()] + claimed,
                    self.default_range, self.pool_prefix)
            except pools.PoolExhausted as e:
                raise Conflict(str(e)) from None
            gw = gw_chosen or pools.default_gateway(sub)
            rec = NetworkRecord(id=net_id, name=name, driver=driver, subnet=str(sub),
                                gateway=str(gw), vni=vni, created=time.time(),
                                created_by=self.host, pool_claimed=chosen is None)
            compares = [Absent(keys.name(name)), Absent(keys.vni(vni))]
            ops = [Put(keys.network(net_id), rec.to_json()),
                   Put(keys.name(name), NameClaim(id=net_id).to_json()),
                   Put(keys.vni(vni), VniClaim(network=net_id).to_json())]
            if chosen is None:
                compares.append(Absent(keys.pool(sub)))
                ops.append(Put(keys.pool(sub), PoolClaim(network=net_id).to_json()))
            result = await self.store.txn(compares, ops)
            if result.succeeded:
                return rec, result.revision
            # Lost a race: read again what the winner took, and retry.
        raise Conflict(f"could not claim a VNI and address pool for network {name!r}: "
                       "try again")

    async def remove(self, ref: str) -> NetworkRecord:
        net = self.find(ref)
        if self.is_builtin(net):
            raise Invalid(f"network {net.name} is built in and cannot be removed")
        await self.in_scope(net)
        attached = self.view.endpoints(net.id)
        if attached:
            where = sorted({ep.host for ep in attached})
            raise Conflict(f"network {net.name} has {len(attached)} attached container(s) "
                           f"(on {', '.join(where)}): remove them first")
        ops = [Delete(keys.network(net.id)), Delete(keys.name(net.name)),
               Delete(keys.vni(net.vni)), Delete(keys.blocks(net.id), prefix=True),
               Delete(keys.services(net.id), prefix=True),
               Delete(keys.members(net.id), prefix=True), Delete(keys.present(net.id), prefix=True)]
        if net.pool_claimed:
            ops.append(Delete(keys.pool(net.network)))
        result = await self.store.txn([], ops)
        await self.view.mirror.wait_for(keys.network(net.id), result.revision)
        return net


def parse_publish(value: str) -> tuple[str, str | None, str]:
    """SVC[.NETWORK[.DRIVER]] -> (service, network or None, driver)."""
    parts = value.split(".")
    if len(parts) > 3 or not all(parts):
        raise Invalid(f"invalid --publish-service {value!r}: expected "
                      "SERVICE[.NETWORK[.DRIVER]]")
    svc = parts[0]
    if not NAME_RE.match(svc):
        raise Invalid(f"invalid service name {svc!r}")
    net = parts[1] if len(parts) > 1 else None
    driver = parts[2] if len(parts) > 2 else DEFAULT_DRIVER
    if driver not in DRIVERS or not DRIVERS[driver].creatable:
        raise Invalid(f"invalid --publish-service {value!r}: driver {driver!r} is not "
                      "cluster-wide")
    return svc, net, driver
