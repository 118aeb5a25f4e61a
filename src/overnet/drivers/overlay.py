"""`overlay`: a cluster-wide network carried between hosts over VXLAN.

On each host with containers on the network: the network's own namespace holding `br0` and
`vxlan0` (created in the host namespace on the underlay address, then moved in), one veth per
container, and for every remote endpoint a static FDB entry and a permanent neighbour entry.
"""

from __future__ import annotations

import asyncio
import logging
import os

from ..dataplane import netns
from ..dataplane.kernel import Kernel
from ..store.records import NetworkRecord
from .base import Attachment, Driver, RemotePeer

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50


class OverlayDriver(Driver):
    name = "overlay"
    scope = "global"

    def __init__(self, *args, port: int = VXLAN_PORT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.port = port
        self.mtu = self.underlay_mtu - VXLAN_OVERHEAD
        self._ready: set[str] = set()                      # networks whose namespace is set up
        self._programmed: dict[str, set[RemotePeer]] = {}  # what the kernel holds, per network
        self._locks: dict[str, asyncio.Lock] = {}

    def ns_path(self, net_id: str) -> str:
        return os.path.join(self.state_dir, "netns", net_id[:12])

    def _lock(self, net_id: str) -> asyncio.Lock:
        return self._locks.setdefault(net_id, asyncio.Lock())

    async def _ensure(self, net: NetworkRecord) -> None:
        if net.id in self._ready:
            return
        path = self.ns_path(net.id)
        prefix = net.network.prefixlen
        await self.kernel.run(Kernel.ensure_overlay, path, net.vni, f"{net.gateway}/{prefix}",
                              self.mtu, self.advertise, self.port)
        self._programmed[net.id] = await self._read_peers(path)
        self._ready.add(net.id)

    async def _read_peers(self, path: str) -> set[RemotePeer]:
        held = await self.kernel.run(Kernel.peers, path)
        return {RemotePeer(mac, ip, vtep) for mac, ip, vtep in held}

    async def join(self, net: NetworkRecord, att: Attachment) -> None:
        async with self._lock(net.id):
            await self._ensure(net)
            await self.kernel.run(Kernel.attach, self.ns_path(net.id), att.container_ns,
                                  att.host_ifname, f"{att.ip}/{att.prefixlen}", att.mac, self.mtu)

    async def leave(self, net: NetworkRecord, att: Attachment) -> None:
        async with self._lock(net.id):
            if net.id in self._ready or os.path.exists(self.ns_path(net.id)):
                await self.kernel.run(Kernel.detach, self.ns_path(net.id), att.host_ifname)

    async def sync(self, net: NetworkRecord, peers: set[RemotePeer], active: bool) -> None:
        async with self._lock(net.id):
            if not active:
                await self._remove(net.id)
                return
            await self._ensure(net)
            path = self.ns_path(net.id)
            held = self._programmed[net.id]
            for peer in held - peers:
                await self.kernel.run(Kernel.remove_peer, path, peer.mac, peer.ip, peer.vtep)
                held.discard(peer)
            for peer in peers - held:
                await self.kernel.run(Kernel.add_peer, path, peer.mac, peer.ip, peer.vtep)
                held.add(peer)

    async def _remove(self, net_id: str) -> None:
        path = self.ns_path(net_id)
        self._ready.discard(net_id)
        self._programmed.pop(net_id, None)
        if os.path.exists(path):
            log.info("removing namespace of network %s", net_id[:12])
            await self.kernel.run(Kernel.remove_overlay, path)

    async def adopt(self, active_nets: dict[str, NetworkRecord]) -> None:
        """Take over the namespaces of networks that still have containers here: their traffic
        must not blink across an agent restart. (The agent removes namespaces nobody owns.)"""
        by_short = {net_id[:12]: net_id for net_id in active_nets}
        for name in netns.list_netns(os.path.join(self.state_dir, "netns")):
            if name in by_short:
                net = active_nets[by_short[name]]
                async with self._lock(net.id):
                    await self._ensure(net)
                log.info("adopted network namespace %s (%d peers)", name,
                         len(self._programmed.get(net.id, ())))
