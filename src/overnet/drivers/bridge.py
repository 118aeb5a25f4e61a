"""`bridge`: a host-local bridge (the seeds' docker0); its subnet may come from a host lease,
and then its endpoints are published so that `--link` finds containers on other hosts."""

from __future__ import annotations

from ..store.records import NetworkRecord
from .base import Attachment, Driver

BRIDGE_NAME = "overnet0"


class BridgeDriver(Driver):
    name = "bridge"

    def __init__(self, *args, bridge: str = BRIDGE_NAME, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bridge = bridge
        self._mtu = self.opts.local_mtu or self.host.mtu
        self.publishes = self.opts.local_publishes
        self._ready: str | None = None   # gateway CIDR the bridge was set up with

    def mtu(self, net: NetworkRecord) -> int:
        return self._mtu

    async def ensure(self, net: NetworkRecord) -> None:
        cidr = f"{net.gateway}/{net.network.prefixlen}"
        if self._ready != cidr:
            await self.dp.ensure_bridge(self.bridge, cidr, self._mtu)
            self._ready = cidr

    async def attach(self, net: NetworkRecord, att: Attachment) -> None:
        await self.ensure(net)
        await self.dp.attach(None, att.container_ns, att.host_ifname,
                             f"{att.ip}/{att.prefixlen}", att.mac, self._mtu, net.gateway,
                             self.bridge, att.ifname)

    async def detach(self, net: NetworkRecord, att: Attachment) -> None:
        await self.dp.detach(None, att.host_ifname)
