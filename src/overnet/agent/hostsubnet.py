"""Host subnets for the agent: flannel's lease and backend, glued to the built-in bridge.

With `--flannel` (or `--flannel-network`), the agent, before it serves:
  1. reads the network config at <prefix>/config (writing it first, create-if-absent, when
     --flannel-network is given; waiting for it otherwise, as flanneld does);
  2. leases a subnet (<prefix>/subnets/A.B.C.D-LEN) and sets up the backend (flannel.N for
     vxlan) and the masquerade rules (--ip-masq);
  3. gives the `bridge` network that subnet (gateway .1, MTU of the backend) and writes
     subnet.env once the bridge is up.
Then it follows the other hosts' leases (a Mirror of <prefix>/subnets/) and keeps its own
lease renewed, its masquerade rules in place, and the kernel in step with the leases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..dataplane.api import Dataplane
from ..dataplane.masq import Masquerade, MasqError
from ..errors import Conflict, Invalid, NotFound, Unavailable
from ..flannel import config as fconfig
from ..fsutil import write_atomic
from ..flannel.backend import Backend, make_backend
from ..flannel.lease import LeaseError, LeaseManager, SubnetLease, decode, read_previous
from ..store import keys
from ..store.base import Store, StoreError
from ..store.mirror import Mirror
from .config import AgentConfig

if TYPE_CHECKING:
    from ..drivers import HostInfo
    from ..drivers.bridge import BridgeDriver
    from ..store.records import NetworkRecord

log = logging.getLogger(__name__)

CONFIG_WAIT_LOG = 5.0       # seconds between "still waiting for the config" lines
TARGET = "hostsubnet"        # the reconciler's name for this feature
MASQ_CHECK_EVERY = 2.0      # how soon removed masquerade rules come back
RETRY = 5.0                 # after a failed renewal


def bridge_network_id(prefix: str) -> str:
    """One network ID for every host's flannel bridge: together they are one routed
    network, so a --link can name a container on any host's bridge."""
    return hashlib.sha256(f"overnet flannel bridge {keys.flannel_config(prefix)}".encode()
                          ).hexdigest()


def write_subnet_env(path: str, network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network,
                     mtu: int, ipmasq: bool, bridge: str | None = None) -> None:
    """flanneld's WriteSubnetFile: FLANNEL_SUBNET is the bridge address (.1), not the .0.
    Two lines of overnet's own tell its `flannel` CNI plugin to share the agent's bridge and
    to take addresses from the upper half of the subnet (see `cni_range`)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    extra = (f"OVERNET_BRIDGE={bridge}\nOVERNET_CNI_RANGE_START={cni_range(subnet)[0]}\n"
             if bridge else "")
    write_atomic(path, f"FLANNEL_NETWORK={network}\n"
                       f"FLANNEL_SUBNET={subnet.network_address + 1}/{subnet.prefixlen}\n"
                       f"FLANNEL_MTU={mtu}\n"
                       f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}\n" + extra)


def cni_range(subnet: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Address,
                                                       ipaddress.IPv4Network]:
    """Where CNI containers' addresses start on a host subnet, and the part left to the
    agent's own bridge containers (the lower half)."""
    lower, upper = subnet.subnets(prefixlen_diff=1)
    return upper.network_address, lower


class HostSubnet:
    def __init__(self, store: Store, dp: Dataplane, cfg: AgentConfig, host: HostInfo) -> None:
        self.store = store
        self.dp = dp
        self.agent_cfg = cfg
        self.host = host
        self.prefix = cfg.subnet_prefix.rstrip("/")
        self.subnet_file = cfg.subnet_file
        self.ip_masq = cfg.ip_masq
        self.bridge_id = bridge_network_id(self.prefix)
        self.cfg: fconfig.NetConfig | None = None
        self.backend: Backend | None = None
        self.manager: LeaseManager | None = None
        self.mirror: Mirror | None = None
        self.masq: Masquerade | None = None
        self.acquire_seconds = 0.0

    # --- what the agent uses ------------------------------------------------------------------

    @property
    def lease(self) -> SubnetLease:
        assert self.manager is not None and self.manager.lease is not None
        return self.manager.lease

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.lease.subnet

    @property
    def bridge_mtu(self) -> int:
        assert self.backend is not None
        return self.backend.mtu

    # --- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Config, lease, backend, masquerade: everything before the bridge can use the
        subnet. Raises Invalid/Conflict with a message the operator can act on."""
        self.cfg = cfg = await self._config()
        self.backend = make_backend(self.dp, cfg, self.host.address, self.host.mtu)
        self.manager = LeaseManager(self.store, cfg, self.prefix, self.backend.attrs(),
                                    previous=read_previous(self.subnet_file))
        t0 = time.monotonic()
        try:
            lease = await self.manager.acquire()
        except LeaseError as e:
            raise Conflict(str(e)) from None
        self.acquire_seconds = time.monotonic() - t0
        log.info("subnet lease %s (network %s, backend %s) in %.3fs", lease.subnet,
                 cfg.network, cfg.backend, self.acquire_seconds)
        self.mirror = Mirror(self.store, keys.flannel_subnets(self.prefix))
        await self.mirror.start()
        self.events = self.mirror.subscribe()
        if await self.dp.enable_forwarding():
            log.info("enabled IPv4 forwarding (host subnets are routed)")
        await self.backend.setup(lease)
        await self.backend.sync(lease, self.leases())
        if self.ip_masq:
            self.masq = Masquerade(str(cfg.network), str(lease.subnet))
            try:
                await self.masq.ensure()
            except MasqError as e:
                raise Invalid(str(e)) from None

    async def ready(self, bridge: BridgeDriver, net: NetworkRecord) -> None:
        """The bridge is up with the leased subnet: now tell the world (subnet.env)."""
        await bridge.ensure(net)
        assert self.cfg is not None
        write_subnet_env(self.subnet_file, self.cfg.network, self.subnet, self.bridge_mtu,
                         self.ip_masq, bridge.bridge)

    def cluster_network(self, bridge: NetworkRecord) -> NetworkRecord:
        """The bridge as one network across hosts: what other hosts' bridge endpoints are
        checked against (their addresses are in the cluster network, not in our subnet)."""
        assert self.cfg is not None
        return dataclasses.replace(bridge, subnet=str(self.cfg.network))

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """Background work, for the agent's supervisor (the lease watch and resync go
        through the agent's one reconciler: see `reconcile`)."""
        out: dict[str, Callable[[], Awaitable[None]]] = {"lease-renew": self._renew_loop}
        if self.masq is not None:
            out["masquerade"] = self._masq_loop
        return out

    def active(self) -> set[str]:
        return {TARGET}

    async def stop(self) -> None:
        """Keep the lease, the device and the routes (a restart must not disturb traffic);
        drop the masquerade rules, which only a running agent can keep correct."""
        if self.mirror is not None:
            await self.mirror.stop()
        if self.masq is not None:
            try:
                await self.masq.remove()
            except MasqError as e:
                log.warning("%s", e)

    async def _config(self) -> fconfig.NetConfig:
        key = keys.flannel_config(self.prefix)
        want = self.agent_cfg.flannel_network
        waited = 0.0
        while True:
            kv = await self.store.get(key)
            if kv is None and want:
                try:
                    cfg = fconfig.build(want, backend=self.agent_cfg.flannel_backend
                                        or fconfig.VXLAN)
                except fconfig.ConfigError as e:
                    raise Invalid(f"--flannel-network: {e}") from None
                if await self.store.create(key, cfg.to_json()):
                    log.info("wrote network config %s: %s", key, cfg.to_json().decode())
                continue    # read back whatever won (ours or another host's)
            if kv is not None:
                try:
                    cfg = fconfig.parse(kv.value)
                except fconfig.ConfigError as e:
                    raise Invalid(f"network config at {key}: {e}") from None
                if want and ipaddress.IPv4Network(want, strict=False) != cfg.network:
                    log.warning("--flannel-network %s ignored: the cluster's config at %s says "
                                "%s", want, key, cfg.network)
                return cfg
            if waited % CONFIG_WAIT_LOG == 0:
                log.warning("waiting for the network config at %s (write it with `overnet "
                            "subnet config --network CIDR` or etcdctl)", key)
            await asyncio.sleep(1.0)
            waited += 1.0

    # --- following the cluster ----------------------------------------------------------------

    def leases(self) -> list[SubnetLease]:
        assert self.mirror is not None
        out = []
        for key, item in list(self.mirror.items.items()):
            lease = decode(self.prefix, key, item.value, 0, item.mod_revision)
            if lease is not None:
                out.append(lease)
        return out

    async def reconcile(self, target: str, verify: bool) -> None:
        """Make the kernel hold what the current leases ask for; re-create our own lease
        if it was deleted (flanneld would exit and get it back on restart)."""
        assert self.backend is not None and self.manager is not None and self.mirror
        if self.manager.key not in self.mirror.items:
            log.warning("the lease of this host's subnet %s is gone: re-creating it",
                        self.subnet)
            await self.manager.reclaim()
        await self.backend.sync(self.lease, self.leases())

    async def _renew_loop(self) -> None:
        assert self.manager is not None
        while True:
            delay = self.manager.renew_in()
            if delay is None:
                return     # a reservation: no TTL to renew
            await asyncio.sleep(delay)
            try:
                await self.manager.renew()
                log.info("renewed the lease of %s", self.subnet)
            except StoreError as e:
                log.warning("renewing the lease of %s failed: %s; retrying", self.subnet, e)
                await asyncio.sleep(RETRY)

    async def _masq_loop(self) -> None:
        assert self.masq is not None
        while True:
            await asyncio.sleep(MASQ_CHECK_EVERY)
            try:
                await self.masq.check()
            except MasqError as e:
                log.warning("%s", e)

    # --- API ----------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        assert self.cfg is not None and self.backend is not None and self.manager is not None
        lease = self.lease
        return {
            "subnet": str(lease.subnet), "network": str(self.cfg.network),
            "gateway": str(lease.subnet.network_address + 1),
            "public_ip": lease.attrs.public_ip, "backend": self.cfg.backend,
            "backend_data": {"VNI": lease.attrs.vni, "VtepMAC": lease.attrs.vtep_mac}
            if lease.attrs.vtep_mac else None,
            "key": self.manager.key, "value": lease.attrs.to_json().decode(),
            "expires": self.manager.expires or None, "renewals": self.manager.renewals,
            "mtu": self.bridge_mtu, "subnet_file": self.subnet_file, "ip_masq": self.ip_masq,
            "masq_restores": self.masq.restores if self.masq else 0,
            "peers": self.backend.peers, "errors": dict(self.backend.errors),
            "acquire_seconds": round(self.acquire_seconds, 4),
        }


# --- API helpers (work with or without --flannel: they only need the store) ----------------

async def get_config(store: Store, prefix: str) -> dict[str, Any]:
    key = keys.flannel_config(prefix)
    kv = await store.get(key)
    if kv is None:
        raise NotFound(f"no network config at {key}: write one with `overnet subnet config "
                       "--network CIDR`")
    try:
        cfg = fconfig.parse(kv.value)
    except fconfig.ConfigError as e:
        return {"key": key, "raw": kv.value.decode(errors="replace"), "error": str(e)}
    return {"key": key, "raw": kv.value.decode(errors="replace"), "config": cfg.to_dict()}


async def put_config(store: Store, prefix: str, body: dict[str, Any]) -> dict[str, Any]:
    key = keys.flannel_config(prefix)

    def opt_int(name: str) -> int | None:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"invalid {name} {value!r}: expected an integer")
        return value

    try:
        cfg = fconfig.build(str(body.get("network") or ""), opt_int("subnet_len"),
                            str(body.get("backend") or fconfig.VXLAN), body.get("subnet_min"),
                            body.get("subnet_max"), opt_int("vni"), opt_int("port"))
    except fconfig.ConfigError as e:
        raise Invalid(f"invalid network config: {e}") from None
    await store.put(key, cfg.to_json())
    return {"key": key, "raw": cfg.to_json().decode(), "config": cfg.to_dict()}


async def list_leases(store: Store, prefix: str) -> list[dict[str, Any]]:
    try:
        kvs, _ = await store.list(keys.flannel_subnets(prefix))
    except StoreError as e:
        raise Unavailable(str(e)) from None
    out = []
    for kv in kvs:
        lease = decode(prefix, kv.key, kv.value, kv.lease, kv.mod_revision)
        if lease is not None:
            out.append({"subnet": str(lease.subnet), "public_ip": lease.attrs.public_ip,
                        "backend": lease.attrs.backend_type, "vtep_mac": lease.attrs.vtep_mac,
                        "key": kv.key, "lease": kv.lease})
    return out
