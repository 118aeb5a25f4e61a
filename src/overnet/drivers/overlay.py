"""`overlay`: a cluster-wide network carried between hosts over VXLAN.

On each host with endpoints on the network: the network's own namespace holding `vxlan0`
(created in the host namespace on the underlay address, then moved in) and `gw0`, its macvlan
holding the gateway address; one macvlan of vxlan0 per container interface, in the container;
and for every remote endpoint a static FDB entry and a permanent neighbour entry.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace

from ..dataplane.model import GATEWAY, VXLAN, VXLAN_OVERHEAD, DataplaneError
from ..store.records import NetworkRecord
from .base import Attachment, Driver, RemotePeer, check_interface

log = logging.getLogger(__name__)


class OverlayDriver(Driver):
    name = "overlay"
    creatable = True
    scope = "global"
    discovery = True
    publishes = True
    host_side = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.port = self.opts.vxlan_port
        self._ready: set[str] = set()                      # networks whose namespace is set up
        self._programmed: dict[str, set[RemotePeer]] = {}  # what we put in the kernel
        self._locks: dict[str, asyncio.Lock] = {}
        self._earlier: set[str] = set()   # adopted from an overnet before macvlans (below)

    def mtu(self, net: NetworkRecord) -> int:
        return self.host.mtu - VXLAN_OVERHEAD

    def namespace(self, net: NetworkRecord) -> str:
        return os.path.join(self.host.state_dir, "netns", net.id[:12])

    def _lock(self, net_id: str) -> asyncio.Lock:
        return self._locks.setdefault(net_id, asyncio.Lock())

    async def _ensure(self, net: NetworkRecord) -> None:
        if net.id in self._ready:
            return
        await self.dp.ensure_overlay(self.namespace(net), net.vni,
                                     f"{net.gateway}/{net.network.prefixlen}", self.mtu(net),
                                     self.host.address, self.port)
        self._programmed[net.id] = await self._held(net)
        self._ready.add(net.id)

    async def _held(self, net: NetworkRecord) -> set[RemotePeer]:
        return {RemotePeer(mac, ip, vtep)
                for mac, ip, vtep in await self.dp.peers(self.namespace(net))}

    async def attach(self, net: NetworkRecord, att: Attachment) -> None:
        async with self._lock(net.id):
            await self._ensure(net)
            if att.handover:
                await self.dp.attach_handover(self.namespace(net), att.handover, att.mac,
                                              self.mtu(net))
                return
            await self.dp.attach_macvlan(self.namespace(net), att.container_ns,
                                         f"{att.ip}/{att.prefixlen}", att.mac, self.mtu(net),
                                         net.gateway, att.ifname)

    async def reattach(self, net: NetworkRecord, att: Attachment) -> None:
        """A device handed over to a runtime is converged where the runtime put it, under the
        name it gave it; before it is moved, where it waits."""
        ifname = await self._placed(att) if att.handover else None
        await self.attach(net, replace(att, ifname=ifname, handover="") if ifname else att)

    async def _placed(self, att: Attachment) -> str | None:
        """The name a runtime gave the device it was handed, once it is in the container
        (found by its MAC; a veth of an overnet before macvlans too). None while it waits to
        be moved."""
        if not att.container_ns or not await self.dp.is_netns(att.container_ns):
            return None
        try:
            links = await self.dp.links(att.container_ns)
        except DataplaneError:
            return None
        return next((li.name for li in links if li.mac == att.mac.lower()
                     and li.kind in ("macvlan", "veth")), None)

    async def detach(self, net: NetworkRecord, att: Attachment) -> None:
        """The container's macvlan, where it is: in the container, or for a hand-over in the
        host namespace (where Docker puts it back when the container leaves). Gone with the
        container's namespace or the network's vxlan0 otherwise."""
        await self.dp.detach_macvlan(None if att.handover else att.container_ns,
                                     att.handover or att.ifname, att.mac)

    async def sync(self, net: NetworkRecord, peers: set[RemotePeer], active: bool,
                   verify: bool = False) -> bool:
        async with self._lock(net.id):
            if not active:
                await self._remove(net)
                return False
            repaired = net.id in self._earlier or (verify and await self._drifted(net))
            self._earlier.discard(net.id)
            if repaired:
                log.warning("network %s: its devices had drifted; setting them up again",
                            net.name)
                self._ready.discard(net.id)
            fresh = net.id not in self._ready       # _ensure reads the kernel's peers then
            await self._ensure(net)
            if verify:   # what the kernel holds, not what we believe we put there
                held = self._programmed[net.id] if fresh else await self._held(net)
                # one copy of a peer per host: where the kernel agrees, keep the caller's
                # (equal) objects, which the observer holds too
                self._programmed[net.id] = {p for p in peers if p in held} | (held - peers)
            held = self._programmed[net.id]
            path = self.namespace(net)
            for peer in held - peers:
                await self.dp.remove_peer(path, peer.mac, peer.ip, peer.vtep)
                held.discard(peer)
            new = peers - held
            if new:
                await self.dp.add_peers(path, [(p.mac, p.ip, p.vtep) for p in new])
                held |= new
            return repaired

    async def _drifted(self, net: NetworkRecord) -> bool:
        """Whether the network's own devices differ from what _ensure makes (a vxlan0 whose
        MTU was lowered took every macvlan of it down with it)."""
        try:
            return any((await self.device_problems(net)).values())
        except DataplaneError:     # the namespace is gone
            return True

    async def device_problems(self, net: NetworkRecord) -> dict[str, list[str]]:
        """How the network's own devices differ from what _ensure makes them, one line per
        field, by device ({vxlan0: [...], gw0: [...]}; empty: as it should be). Raises
        DataplaneError if the network's namespace is gone."""
        path, mtu = self.namespace(net), self.mtu(net)
        gw = await self.dp.link_info(path, GATEWAY)
        try:
            vx = await self.dp.vxlan_info(path)
        except DataplaneError as e:
            vx_problems = [f"cannot read it: {e}"]
        else:
            want = {"vni": net.vni, "port": self.port, "local": self.host.address, "mtu": mtu,
                    "master": None, "up": True}
            vx_problems = [f"{k} {vx.get(k)} (should be {v})" for k, v in want.items()
                           if vx.get(k) != v and not (k == "local" and vx.get(k) is None)]
        if gw is None:
            return {VXLAN: vx_problems, GATEWAY: ["missing"]}
        cidr = f"{net.gateway}/{net.network.prefixlen}"
        have = {"kind": gw.kind, "mtu": gw.mtu, "up": gw.up}
        want = {"kind": "macvlan", "mtu": mtu, "up": True}
        gw_problems = [f"{k} {have[k]} (should be {v})" for k, v in want.items() if have[k] != v]
        if cidr not in gw.addresses:
            gw_problems.append(f"holds {', '.join(gw.addresses) or 'no address'} (should "
                               f"hold {cidr})")
        return {VXLAN: vx_problems, GATEWAY: gw_problems}

    async def _vxlan_info(self, net: NetworkRecord) -> dict:
        """vxlan0 as the kernel holds it ({} if it, or the namespace, is gone)."""
        try:
            return await self.dp.vxlan_info(self.namespace(net))
        except DataplaneError:
            return {}

    async def _remove(self, net: NetworkRecord) -> None:
        self._ready.discard(net.id)
        self._earlier.discard(net.id)
        self._programmed.pop(net.id, None)
        if await self.dp.is_netns(self.namespace(net)):
            log.info("removing namespace of network %s", net.id[:12])
            await self.dp.remove_overlay(self.namespace(net))

    async def adopt(self, active: dict[str, NetworkRecord]) -> None:
        """Take over the namespaces of networks that still have endpoints here: their
        traffic must not blink across an agent restart."""
        for net in active.values():
            if await self.dp.is_netns(self.namespace(net)):
                async with self._lock(net.id):
                    if (await self._vxlan_info(net)).get("master"):
                        # an overnet before macvlans made it: vxlan0 a port of a bridge, the
                        # containers on veth pairs. _ensure takes the bridge away; the first
                        # pass then moves each container onto a macvlan (same MAC, address).
                        log.warning("network %s: moving its containers from veth pairs to "
                                    "macvlans", net.name)
                        self._earlier.add(net.id)
                    await self._ensure(net)
                log.info("adopted network namespace %s (%d peers)", net.id[:12],
                         len(self._programmed.get(net.id, ())))

    async def check(self, net: NetworkRecord, att: Attachment,
                    peers: set[RemotePeer]) -> list[str]:
        problems = await check_interface(self.dp, att, self.mtu(net))
        path = self.namespace(net)
        if not await self.dp.is_netns(path):
            return problems + [f"the namespace of network {net.name} ({path}) is missing"]
        info = await self.dp.vxlan_info(path)
        if info.get("vni") != net.vni or info.get("port") != self.port:
            problems.append(f"vxlan0 has vni {info.get('vni')} port {info.get('port')}, not "
                            f"vni {net.vni} port {self.port}")
        held = await self._held(net)
        problems += [f"peer {p.ip} ({p.mac} via {p.vtep}) is not programmed"
                     for p in sorted(peers - held, key=lambda p: p.ip)]
        problems += [f"stale peer {p.ip} ({p.mac} via {p.vtep}) is programmed"
                     for p in sorted(held - peers, key=lambda p: p.ip)]
        return problems
