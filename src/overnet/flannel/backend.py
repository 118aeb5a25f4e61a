"""flannel's two backends: lease events in, kernel changes out (through the data plane).

Level-triggered: `sync(leases)` makes the kernel hold exactly what the current leases ask
for, whatever it held before (an earlier run, a hand edit), so calling it twice is a no-op
and a restarted agent converges without touching entries that are already right.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from typing import Iterable

from ..dataplane import routes
from ..dataplane.api import Dataplane
from .config import HOST_GW, VXLAN, NetConfig
from .lease import LeaseAttrs, SubnetLease

log = logging.getLogger(__name__)


def vtep_mac(public_ip: str, vni: int) -> str:
    """A stable, locally administered unicast MAC for this host's flannel.N device: the
    same after a restart even if the device had to be re-created, so peers keep theirs."""
    digest = hashlib.sha256(f"overnet-flannel {vni} {public_ip}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0e, *digest[:5]))


class Backend:
    kind = ""

    def __init__(self, dp: Dataplane, cfg: NetConfig, public_ip: str,
                 underlay_mtu: int) -> None:
        self.dp = dp
        self.cfg = cfg
        self.public_ip = public_ip
        self.mtu = cfg.mtu(underlay_mtu)
        self.errors: dict[str, str] = {}    # subnet -> why its lease is not programmed
        self.peers = 0                      # remote hosts programmed by the last sync

    def attrs(self) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self.public_ip, backend_type=self.kind)

    async def setup(self, own: SubnetLease) -> None:
        """Devices this host needs before it can carry traffic (before subnet.env)."""

    async def sync(self, own: SubnetLease, leases: Iterable[SubnetLease]) -> None:
        raise NotImplementedError

    def _remote(self, own: SubnetLease, leases: Iterable[SubnetLease]) -> list[SubnetLease]:
        out = []
        errors: dict[str, str] = {}
        for lease in leases:
            if lease.subnet == own.subnet or lease.attrs.public_ip == self.public_ip:
                continue
            if lease.attrs.backend_type != self.kind:
                # flanneld ignores them too: another backend's host cannot talk to ours
                errors[str(lease.subnet)] = (f"backend {lease.attrs.backend_type!r} of "
                                             f"{lease.attrs.public_ip} is not {self.kind!r}")
                continue
            if not lease.subnet.subnet_of(self.cfg.network):
                errors[str(lease.subnet)] = f"not inside Network {self.cfg.network}"
                continue
            why = self._refuse(lease)
            if why:
                errors[str(lease.subnet)] = why
                continue
            out.append(lease)
        for subnet, why in errors.items():
            if self.errors.get(subnet) != why:
                log.error("subnet lease %s not programmed: %s", subnet, why)
        self.errors = errors
        return out

    def _refuse(self, lease: SubnetLease) -> str | None:
        return None


class VxlanBackend(Backend):
    kind = VXLAN

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.device = f"flannel.{self.cfg.vni}"
        self.mac = vtep_mac(self.public_ip, self.cfg.vni)

    def attrs(self) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self.public_ip, backend_type=VXLAN, vni=self.cfg.vni,
                          vtep_mac=self.mac)

    async def setup(self, own: SubnetLease) -> None:
        self.mac = await self.dp.ensure_vxlan(
            self.device, self.cfg.vni, self.public_ip, self.cfg.port,
            self.mtu, self.mac, str(own.subnet.network_address))

    def _refuse(self, lease: SubnetLease) -> str | None:
        if not lease.attrs.vtep_mac:
            return f"vxlan lease of {lease.attrs.public_ip} has no VtepMAC"
        if lease.attrs.vni is not None and lease.attrs.vni != self.cfg.vni:
            return f"VNI {lease.attrs.vni} differs from ours ({self.cfg.vni})"
        return None

    async def sync(self, own: SubnetLease, leases: Iterable[SubnetLease]) -> None:
        want = {routes.VxlanPeer(str(x.subnet), x.attrs.public_ip, x.attrs.vtep_mac or "")
                for x in self._remote(own, leases)}
        added, removed = await self.dp.sync_vxlan(self.device, want)
        self.peers = len(want)
        if added or removed:
            log.info("%s: %d remote hosts (%d entries added, %d removed)", self.device,
                     len(want), added, removed)


class HostGwBackend(Backend):
    kind = HOST_GW

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.oif = 0
        self.segment: list[ipaddress.IPv4Network] = []

    async def setup(self, own: SubnetLease) -> None:
        self.oif, nets = await self.dp.underlay(self.public_ip)
        self.segment = [ipaddress.IPv4Network(n) for n in nets]

    def _refuse(self, lease: SubnetLease) -> str | None:
        ip = ipaddress.IPv4Address(lease.attrs.public_ip)
        if not any(ip in net for net in self.segment):
            on = ", ".join(map(str, self.segment)) or "none"
            return (f"host-gw needs every host on one L2 segment: {ip} is not on this "
                    f"host's ({on}); use the vxlan backend")
        return None

    async def sync(self, own: SubnetLease, leases: Iterable[SubnetLease]) -> None:
        want = {routes.GwRoute(str(x.subnet), x.attrs.public_ip)
                for x in self._remote(own, leases)}
        added, removed = await self.dp.sync_gw(self.oif, want)
        self.peers = len(want)
        if added or removed:
            log.info("host-gw: %d remote hosts (%d routes added, %d removed)", len(want),
                     added, removed)


def make_backend(dp: Dataplane, cfg: NetConfig, public_ip: str,
                 underlay_mtu: int) -> Backend:
    cls = VxlanBackend if cfg.backend == VXLAN else HostGwBackend
    return cls(dp, cfg, public_ip, underlay_mtu)
