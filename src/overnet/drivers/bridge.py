"""`bridge`: a host-local bridge (the seeds' docker0); its subnet may come from a host lease."""

from __future__ import annotations

from ..dataplane.kernel import Kernel
from ..store.records import NetworkRecord
from .base import Attachment, Driver

BRIDGE_NAME = "overnet0"


class BridgeDriver(Driver):
    name = "bridge"

    def __init__(self, *args, bridge: str = BRIDGE_NAME, mtu: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bridge = bridge
        self.mtu = mtu or self.underlay_mtu
        self._ready: str | None = None   # gateway CIDR the bridge was set up with

    async def ensure(self, net: NetworkRecord) -> None:
        cidr = f"{net.gateway}/{net.network.prefixlen}"
        if self._ready != cidr:
            await self.kernel.run(Kernel.ensure_bridge, self.bridge, cidr, self.mtu)
            self._ready = cidr

    async def join(self, net: NetworkRecord, att: Attachment) -> None:
        await self.ensure(net)
        await self.kernel.run(Kernel.attach, None, att.container_ns, att.host_ifname,
                              f"{att.ip}/{att.prefixlen}", att.mac, self.mtu, net.gateway,
                              self.bridge)

    async def leave(self, net: NetworkRecord, att: Attachment) -> None:
        await self.kernel.run(Kernel.detach, None, att.host_ifname)
