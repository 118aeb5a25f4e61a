"""Host subnet leases in flannel's etcd layout, over the Store.

    <prefix>/subnets/10.1.5.0-24  ->  {"PublicIP":"192.168.33.11","BackendType":"vxlan",
                                       "BackendData":{"VNI":1,"VtepMAC":"0e:..."}}

Each key is attached to an etcd lease of 24 h, renewed an hour before it runs out, as
flanneld does; a key without an etcd lease is a flannel "reservation" and never expires.
Pure store logic (no kernel), so it runs over the MemoryStore in unit tests.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..store import keys
from ..store.base import (KV, Absent, Delete, Lease, LeaseLost, ModRevision, Put, Store,
                          StoreError)
from .config import VXLAN, NetConfig

log = logging.getLogger(__name__)

SUBNET_TTL = 24 * 3600      # flannel's subnetTTL
RENEW_MARGIN = 3600         # flannel's subnetRenewMargin
_CANDIDATES = 100           # flannel picks at random among the first 100 free subnets
_ATTEMPTS = 10

IPv4Network = ipaddress.IPv4Network


class LeaseError(Exception):
    """No lease can be had (network full, config missing); the message says why."""


@dataclass(frozen=True)
class LeaseAttrs:
    """flannel's LeaseAttrs (IPv4 part)."""
    public_ip: str
    backend_type: str = VXLAN
    vni: int | None = None          # BackendData.VNI (vxlan; absent in old flannel records)
    vtep_mac: str | None = None     # BackendData.VtepMAC (vxlan)

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"PublicIP": self.public_ip, "BackendType": self.backend_type}
        backend: dict[str, Any] = {}
        if self.vni is not None:
            backend["VNI"] = self.vni
        if self.vtep_mac is not None:
            backend["VtepMAC"] = self.vtep_mac
        if backend:
            data["BackendData"] = backend
        # Go's json.Marshal: no spaces, fields in declaration order
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> LeaseAttrs:
        """Parse flanneld's value (ValueError if it is not one)."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        ip = data.get("PublicIP")
        ipaddress.IPv4Address(ip if isinstance(ip, str) else "")
        backend = data.get("BackendData") or {}
        if not isinstance(backend, dict):
            raise ValueError(f"BackendData is not an object: {backend!r}")
        vni, mac = backend.get("VNI"), backend.get("VtepMAC")
        if vni is not None and (isinstance(vni, bool) or not isinstance(vni, int)):
            raise ValueError(f"bad VNI {vni!r}")
        if mac is not None:
            if not isinstance(mac, str) or len(mac.split(":")) != 6:
                raise ValueError(f"bad VtepMAC {mac!r}")
            mac = mac.lower()
        return cls(public_ip=ip, backend_type=str(data.get("BackendType") or ""), vni=vni,
                   vtep_mac=mac)


@dataclass(frozen=True)
class SubnetLease:
    subnet: IPv4Network
    attrs: LeaseAttrs
    lease_id: int = 0               # etcd lease (0: a reservation, no expiry)
    mod_revision: int = 0


def subnet_key(prefix: str, subnet: IPv4Network) -> str:
    return keys.flannel_subnet(subnet, prefix)


def parse_subnet_key(prefix: str, key: str) -> IPv4Network | None:
    base = keys.flannel_subnets(prefix)
    if not key.startswith(base):
        return None
    try:
        return keys.parse_cidr_key(key[len(base):])
    except ValueError:
        return None


def decode(prefix: str, key: str, value: bytes, lease_id: int = 0,
           mod_revision: int = 0) -> SubnetLease | None:
    """A lease from a key and value; None (logged) for anything flannel would not write."""
    subnet = parse_subnet_key(prefix, key)
    if subnet is None:
        return None
    try:
        attrs = LeaseAttrs.from_json(value)
    except ValueError as e:
        log.warning("skipping bad subnet lease at %s: %s", key, e)
        return None
    return SubnetLease(subnet, attrs, lease_id, mod_revision)


def choose_subnet(cfg: NetConfig, taken: Iterable[IPv4Network],
                  rng: random.Random | None = None) -> IPv4Network | None:
    """flannel's allocateSubnet: at random among the first free subnets (up to 100) from
    SubnetMin to SubnetMax; None when there is none."""
    taken = list(taken)
    size = cfg.subnet_size()
    free: list[IPv4Network] = []
    addr = int(cfg.subnet_min)
    while addr <= int(cfg.subnet_max) and len(free) < _CANDIDATES:
        cand = IPv4Network((addr, cfg.subnet_len))
        if not any(cand.overlaps(t) for t in taken):
            free.append(cand)
        addr += size
    if not free:
        return None
    return (rng or random).choice(free)


def read_previous(path: str) -> IPv4Network | None:
    """The subnet in a subnet.env left by an earlier run (FLANNEL_SUBNET=10.1.5.1/24)."""
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.strip().partition("=")
                if name == "FLANNEL_SUBNET":
                    return IPv4Network(value, strict=False)
    except (OSError, ValueError):
        pass
    return None


class LeaseManager:
    """Acquires and keeps this host's lease; `leases()` lists everybody's."""

    def __init__(self, store: Store, cfg: NetConfig, prefix: str, attrs: LeaseAttrs, *,
                 ttl: int = SUBNET_TTL, renew_margin: int = RENEW_MARGIN,
                 previous: IPv4Network | None = None, rng: random.Random | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.prefix = prefix
        self.attrs = attrs
        self.ttl = ttl
        self.renew_margin = renew_margin
        self.previous = previous
        self.rng = rng or random.Random()
        self.lease: SubnetLease | None = None
        self.expires = 0.0              # wall-clock expiry of the etcd lease (0: never)
        self.renewals = 0

    @property
    def key(self) -> str:
        assert self.lease is not None
        return subnet_key(self.prefix, self.lease.subnet)

    async def leases(self) -> list[SubnetLease]:
        kvs, _ = await self.store.list(keys.flannel_subnets(self.prefix))
        return [x for x in (self._decode(kv) for kv in kvs) if x is not None]

    def _decode(self, kv: KV) -> SubnetLease | None:
        return decode(self.prefix, kv.key, kv.value, kv.lease, kv.mod_revision)

    # --- acquire --------------------------------------------------------------------------

    async def acquire(self) -> SubnetLease:
        """flannel's tryAcquireLease, retried while other hosts win races."""
        for _ in range(_ATTEMPTS):
            lease = await self._try_acquire()
            if lease is not None:
                self.lease = lease
                return lease
        raise LeaseError(f"could not lease a subnet of {self.cfg.network} after {_ATTEMPTS} "
                         "attempts (other hosts kept taking the chosen ones): try again")

    async def _try_acquire(self) -> SubnetLease | None:
        kvs, _ = await self.store.list(keys.flannel_subnets(self.prefix))
        held = [(kv, self._decode(kv)) for kv in kvs]
        leases = [lease for _, lease in held if lease is not None]
        # 1. a lease already naming our address: an earlier run of this host
        for kv, lease in held:
            if lease is None or lease.attrs.public_ip != self.attrs.public_ip:
                continue
            if self.cfg.compatible(lease.subnet):
                log.info("found lease %s for current IP %s, reusing", lease.subnet,
                         self.attrs.public_ip)
                return await self._update(kv, lease)
            log.info("found lease %s for current IP %s but it does not fit the network "
                     "config, deleting it", lease.subnet, self.attrs.public_ip)
            await self.store.txn([ModRevision(kv.key, kv.mod_revision)], [Delete(kv.key)])
            return None
        # 2. the subnet of our subnet.env, if nobody holds it; 3. a random free one
        subnet = None
        prev = self.previous
        if prev is not None and not any(prev.overlaps(x.subnet) for x in leases):
            if self.cfg.compatible(prev):
                log.info("found previously leased subnet %s, reusing", prev)
                subnet = prev
            else:
                log.warning("previously leased subnet %s does not fit the network config, "
                            "ignoring it", prev)
        if subnet is None:
            # Keys that do not parse still block their subnet: never hand out a subnet a
            # record we do not understand might describe.
            taken = [x.subnet for x in leases] + [
                s for s in (parse_subnet_key(self.prefix, kv.key) for kv, x in held
                            if x is None) if s is not None]
            subnet = choose_subnet(self.cfg, taken, self.rng)
        if subnet is None:
            raise LeaseError(f"network {self.cfg.network} is full: every /{self.cfg.subnet_len}"
                             f" from {self.cfg.subnet_min} to {self.cfg.subnet_max} is leased "
                             f"({len(leases)} leases); widen Network or SubnetMin/SubnetMax")
        return await self._create(subnet)

    async def _create(self, subnet: IPv4Network) -> SubnetLease | None:
        etcd_lease = await self.store.grant(self.ttl)
        key = subnet_key(self.prefix, subnet)
        result = await self.store.txn([Absent(key)],
                                      [Put(key, self.attrs.to_json(), etcd_lease.id)])
        if not result.succeeded:
            await self._revoke_quietly(etcd_lease)
            return None            # another host took it meanwhile: pick again
        self.expires = time.time() + etcd_lease.ttl
        log.info("allocated lease %s to %s", subnet, self.attrs.public_ip)
        return SubnetLease(subnet, self.attrs, etcd_lease.id, result.revision)

    async def _update(self, kv: KV, old: SubnetLease) -> SubnetLease | None:
        """Take over our earlier lease: keep its etcd lease when it is still alive (no
        leaked leases across restarts), rewrite the value (the VTEP MAC may be new)."""
        lease_id = kv.lease
        if lease_id:
            try:
                ttl = await self.store.refresh(Lease(lease_id, self.ttl))
                self.expires = time.time() + ttl
            except LeaseLost:
                lease_id = 0
        if kv.lease and not lease_id:
            fresh = await self.store.grant(self.ttl)
            lease_id, self.expires = fresh.id, time.time() + fresh.ttl
        if not kv.lease:
            self.expires = 0.0     # a reservation: flannel keeps it without a TTL
        result = await self.store.txn([ModRevision(kv.key, kv.mod_revision)],
                                      [Put(kv.key, self.attrs.to_json(), lease_id)])
        if not result.succeeded:
            return None
        return SubnetLease(old.subnet, self.attrs, lease_id, result.revision)

    async def _revoke_quietly(self, lease: Lease) -> None:
        try:
            await self.store.revoke(lease)
        except StoreError:
            pass   # it expires on its own, holding no key

    # --- keep -----------------------------------------------------------------------------

    def renew_in(self) -> float | None:
        """Seconds until the next renewal is due (None: a reservation never needs one)."""
        if not self.expires:
            return None
        return max(0.0, self.expires - self.renew_margin - time.time())

    async def renew(self) -> None:
        """Push the expiry out by a full TTL; re-create the key if it is gone."""
        assert self.lease is not None
        if self.lease.lease_id:
            try:
                ttl = await self.store.refresh(Lease(self.lease.lease_id, self.ttl))
                self.expires = time.time() + ttl
                self.renewals += 1
                return
            except LeaseLost:
                log.warning("etcd lease of subnet %s is gone; re-creating the key",
                            self.lease.subnet)
        await self.reclaim(new_etcd_lease=True)

    async def reclaim(self, new_etcd_lease: bool = False) -> bool:
        """Put our key back after someone deleted it. False if another host holds the
        subnet now (then this host's bridge subnet is no longer its own: logged loudly)."""
        assert self.lease is not None
        lease_id = self.lease.lease_id
        if lease_id and not new_etcd_lease:
            try:
                await self.store.refresh(Lease(lease_id, self.ttl))
            except LeaseLost:
                new_etcd_lease = True
        if lease_id and new_etcd_lease:
            fresh = await self.store.grant(self.ttl)
            lease_id, self.expires = fresh.id, time.time() + fresh.ttl
        key = self.key
        result = await self.store.txn([Absent(key)], [Put(key, self.attrs.to_json(), lease_id)])
        if not result.succeeded:
            kv = await self.store.get(key)
            other = self._decode(kv) if kv else None
            if other is not None and other.attrs.public_ip == self.attrs.public_ip:
                return True
            log.error("subnet %s of this host is now leased by %s: restart this agent to get "
                      "a new subnet", self.lease.subnet,
                      other.attrs.public_ip if other else "an unreadable record")
            return False
        self.lease = SubnetLease(self.lease.subnet, self.attrs, lease_id, result.revision)
        log.info("re-created the lease of subnet %s", self.lease.subnet)
        return True
