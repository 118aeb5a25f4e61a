"""Networks: the cluster-wide ones in the store and each host's built-in ones."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import time

from ..errors import Conflict, Invalid, NotFound
from ..ipam import pools
from ..store import keys
from ..store.base import Absent, Delete, Put, Store
from ..store.records import (NameClaim, NetworkRecord, PoolClaim, ServiceRecord, VniClaim,
                             EndpointRecord, decode)

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")
BUILTIN = {"none": "null", "host": "host", "bridge": "bridge"}
FIRST_VNI = 256
MAX_VNI = (1 << 24) - 1


def validate_network_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise Invalid(f"invalid network name {name!r}: use 1-63 letters, digits, '_' or '-', "
                      "starting with a letter or digit")
    if name in BUILTIN:
        raise Conflict(f"network name {name!r} is reserved for the built-in network")


class ClusterView:
    """Typed reads over the agent's mirror of the store (no I/O)."""

    def __init__(self, mirror) -> None:
        self.mirror = mirror   # its `items` (key -> value, mod_revision) stay current
        self._decoded: dict[str, tuple[int, object]] = {}   # key -> (mod_revision, record)

    @property
    def items(self) -> dict:
        return self.mirror.items

    def _records(self, prefix: str, cls):
        """Records under a prefix in the order they were written (records here are never
        updated in place, so the last write is the creation)."""
        out = []
        for key, item in list(self.items.items()):
            if key.startswith(prefix):
                rec = self._decode(cls, key, item)
                if rec is not None:
                    out.append((item.mod_revision, rec))
        out.sort(key=lambda pair: pair[0])
        return out

    def _decode(self, cls, key: str, item):
        """Each value is parsed once per revision: hosts files are rendered on every change,
        for every local container, from all the network's endpoints."""
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == item.mod_revision:
            return cached[1]
        rec = decode(cls, key, item.value)
        if len(self._decoded) > 4 * len(self.items) + 64:
            self._decoded = {k: v for k, v in self._decoded.items() if k in self.items}
        self._decoded[key] = (item.mod_revision, rec)
        return rec

    def networks(self) -> list[NetworkRecord]:
        return [r for _, r in self._records(keys.NETWORKS, NetworkRecord)]

    def network(self, net_id: str) -> NetworkRecord | None:
        item = self.items.get(keys.network(net_id))
        return decode(NetworkRecord, keys.network(net_id), item.value) if item else None

    def endpoints(self, net_id: str | None = None) -> list[EndpointRecord]:
        prefix = keys.endpoints(net_id) if net_id else keys.ENDPOINTS
        return [r for _, r in self._records(prefix, EndpointRecord)]

    def services(self, net_id: str | None = None) -> list[ServiceRecord]:
        prefix = keys.services(net_id) if net_id else keys.SERVICES
        return [r for _, r in self._records(prefix, ServiceRecord)]

    def used_vnis(self) -> set[int]:
        return {int(k[len(keys.VNIS):]) for k in self.items if k.startswith(keys.VNIS)}

    def used_pools(self) -> list[ipaddress.IPv4Network]:
        nets = [n.network for n in self.networks()]
        nets += [keys.parse_cidr_key(k[len(keys.POOLS):]) for k in self.items
                 if k.startswith(keys.POOLS)]
        return nets

    def alive_hosts(self) -> set[str]:
        return {k[len(keys.HOSTS):] for k in self.items if k.startswith(keys.HOSTS)}


def builtin_networks(ids: dict[str, str], bridge_subnet: str,
                     bridge_gateway: str | None = None) -> list[NetworkRecord]:
    subnet = ipaddress.IPv4Network(bridge_subnet)
    gw = bridge_gateway or str(pools.default_gateway(subnet))
    return [
        NetworkRecord(id=ids["none"], name="none", driver="null", subnet="", gateway=""),
        NetworkRecord(id=ids["host"], name="host", driver="host", subnet="", gateway=""),
        NetworkRecord(id=ids["bridge"], name="bridge", driver="bridge", subnet=str(subnet),
                      gateway=gw),
    ]


def find(networks: list[NetworkRecord], ref: str) -> NetworkRecord:
    """By name, full ID or unique ID prefix, as Docker resolves them."""
    for net in networks:
        if ref in (net.name, net.id):
            return net
    matches = [n for n in networks if ref and n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise Invalid(f"network ID prefix {ref!r} is ambiguous: give more characters")
    raise NotFound(f"network {ref!r} not found")


async def create_overlay(store: Store, view: ClusterView, name: str, host: str,
                         subnet: str | None, gateway: str | None, default_range: str,
                         pool_prefix: int) -> tuple[NetworkRecord, int]:
    """Claim name, VNI and (default) pool in one transaction; retry when another host won a
    VNI or pool race. Returns the record and the revision it was written at."""
    validate_network_name(name)
    if gateway and not subnet:
        raise Invalid(f"--gateway {gateway} needs a --subnet to go with it")
    try:
        chosen = pools.parse_subnet(subnet) if subnet else None
        gw_chosen = pools.parse_gateway(gateway, chosen) if gateway and chosen else None
    except pools.IpamError as e:
        raise Invalid(str(e)) from None
    net_id = secrets.token_hex(32)
    for _ in range(20):
        if keys.name(name) in view.items:
            raise Conflict(f"network with name {name!r} already exists")
        vni = next(v for v in range(FIRST_VNI, MAX_VNI) if v not in view.used_vnis())
        try:
            sub = chosen or pools.next_free_pool(view.used_pools(), default_range, pool_prefix)
        except pools.PoolExhausted as e:
            raise Conflict(str(e)) from None
        gw = gw_chosen or pools.default_gateway(sub)
        rec = NetworkRecord(id=net_id, name=name, driver="overlay", subnet=str(sub),
                            gateway=str(gw), vni=vni, created=time.time(), created_by=host,
                            pool_claimed=chosen is None)
        compares = [Absent(keys.name(name)), Absent(keys.vni(vni))]
        ops = [Put(keys.network(net_id), rec.to_json()),
               Put(keys.name(name), NameClaim(id=net_id).to_json()),
               Put(keys.vni(vni), VniClaim(network=net_id).to_json())]
        if chosen is None:
            compares.append(Absent(keys.pool(sub)))
            ops.append(Put(keys.pool(sub), PoolClaim(network=net_id).to_json()))
        result = await store.txn(compares, ops)
        if result.succeeded:
            return rec, result.revision
        # Lost a race: let the mirror catch up with what the winner took, then try again.
        try:
            await view.mirror.wait_revision(result.revision, timeout=1)
        except asyncio.TimeoutError:
            pass   # the revision may belong to a write outside our prefix
    raise Conflict(f"could not claim a VNI and address pool for network {name!r}: try again")


async def remove_overlay(store: Store, view: ClusterView, net: NetworkRecord) -> None:
    attached = view.endpoints(net.id)
    if attached:
        where = sorted({ep.host for ep in attached})
        raise Conflict(f"network {net.name} has {len(attached)} attached container(s) "
                       f"(on {', '.join(where)}): remove them first")
    ops = [Delete(keys.network(net.id)), Delete(keys.name(net.name)), Delete(keys.vni(net.vni)),
           Delete(keys.blocks(net.id), prefix=True), Delete(keys.services(net.id), prefix=True)]
    if net.pool_claimed:
        ops.append(Delete(keys.pool(net.network)))
    await store.txn([], ops)


def parse_publish(value: str) -> tuple[str, str | None, str]:
    """SVC[.NETWORK[.DRIVER]] -> (service, network or None, driver)."""
    parts = value.split(".")
    if len(parts) > 3 or not all(parts):
        raise Invalid(f"invalid --publish-service {value!r}: expected SERVICE[.NETWORK[.DRIVER]]")
    svc = parts[0]
    if not NAME_RE.match(svc):
        raise Invalid(f"invalid service name {svc!r}")
    net = parts[1] if len(parts) > 1 else None
    driver = parts[2] if len(parts) > 2 else "overlay"
    if driver != "overlay":
        raise Invalid(f"invalid --publish-service {value!r}: driver {driver!r} is not "
                      "cluster-wide (only overlay is)")
    return svc, net, driver
