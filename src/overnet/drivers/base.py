"""The driver interface: how one kind of network connects containers on this host.

A driver is told what to do in the network's own terms (a network record, an attachment,
the set of remote peers); it knows nothing of the store. What a kind of network *is* lives
in its class attributes, so nothing outside `drivers/` ever asks for a driver by name:

    creatable   `network create -d NAME` may make one (cluster-wide networks)
    scope       "global": the network lives in the store and its addresses come from
                per-host blocks; "local": one host's own
    needs_netns / needs_address   what a container on it gets
    host_side   a container interface has a device on the host's side (a veth's other end,
                its endpoint's `host_ifname`)
    publishes   its endpoints are written to the store, for other hosts
    discovery   its endpoints are listed in containers' /etc/hosts and in DNS
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from ..dataplane.api import Dataplane
from ..store.records import NetworkRecord


@dataclass(frozen=True)
class HostInfo:
    """This host as the cluster sees it."""
    name: str
    address: str          # underlay (advertise) address: the VXLAN tunnel endpoint
    mtu: int              # underlay MTU
    state_dir: str


@dataclass(frozen=True)
class DriverOptions:
    """Host-wide settings; each driver takes what concerns it."""
    vxlan_port: int = 4789
    local_mtu: int | None = None       # the local bridge's MTU (a host-subnet backend's)
    local_publishes: bool = False      # local bridges form one routed network (host subnets)


@dataclass(frozen=True)
class Attachment:
    """One container interface's link to one network on this host."""
    container_ns: str      # path of the container's network namespace
    host_ifname: str       # the veth end the driver keeps on its side ("": none)
    ip: str                # address without prefix
    prefixlen: int
    mac: str
    ifname: str = "eth0"
    handover: str = ""     # leave the container end in the host namespace under this name
                           # (for a runtime that moves it itself: Docker); nothing configured


class RemotePeer(NamedTuple):    # a tuple: made and hashed for every peer of every pass
    mac: str
    ip: str
    vtep: str              # underlay address of the host it lives on


class Driver:
    name: ClassVar[str] = ""
    creatable: ClassVar[bool] = False
    scope: ClassVar[str] = "local"
    needs_netns: ClassVar[bool] = True
    needs_address: ClassVar[bool] = True
    host_side: ClassVar[bool] = True
    discovery: ClassVar[bool] = False
    publishes: bool = False

    def __init__(self, dp: Dataplane, host: HostInfo, opts: DriverOptions | None = None
                 ) -> None:
        self.dp = dp
        self.host = host
        self.opts = opts or DriverOptions()

    def mtu(self, net: NetworkRecord) -> int:
        return self.host.mtu

    def namespace(self, net: NetworkRecord) -> str | None:
        """Path of the network namespace holding this network's devices (None: the host's)."""
        return None

    async def attach(self, net: NetworkRecord, att: Attachment) -> None:
        """Connect a container interface (its netns exists); calling it again converges."""

    async def reattach(self, net: NetworkRecord, att: Attachment) -> None:
        """Put an attached interface right again (its network's devices had drifted)."""
        await self.attach(net, att)

    async def detach(self, net: NetworkRecord, att: Attachment) -> None:
        """Disconnect it; missing pieces are fine."""

    async def sync(self, net: NetworkRecord, peers: set[RemotePeer], active: bool,
                   verify: bool = False) -> bool:
        """Make the kernel hold exactly `peers` for the network (active: this host has
        endpoints on it; inactive: remove what the network left on this host). With
        `verify`, read what the kernel holds instead of trusting what was programmed.
        True: the network's own devices had drifted and were set up again (the containers'
        interfaces on them want another look)."""
        return False

    async def adopt(self, active: dict[str, NetworkRecord]) -> None:
        """At start: take over kernel state an earlier run left for these networks."""

    async def check(self, net: NetworkRecord, att: Attachment,
                    peers: set[RemotePeer]) -> list[str]:
        """What the kernel holds that differs from what it should, one line each."""
        return await check_interface(self.dp, att, self.mtu(net))


async def check_interface(dp: Dataplane, att: Attachment, mtu: int) -> list[str]:
    """The container side of an attachment: device, address, MAC, MTU, state."""
    problems = []
    link = await dp.link_info(att.container_ns, att.ifname)
    if link is None:
        return [f"{att.ifname} is missing in {att.container_ns}"]
    want = f"{att.ip}/{att.prefixlen}"
    if want not in link.addresses:
        problems.append(f"{att.ifname} holds {', '.join(link.addresses) or 'no address'}, "
                        f"not {want}")
    if (link.mac or "").lower() != att.mac.lower():
        problems.append(f"{att.ifname} has MAC {link.mac}, not {att.mac}")
    if link.mtu != mtu:
        problems.append(f"{att.ifname} has MTU {link.mtu}, not {mtu}")
    if not link.up:
        problems.append(f"{att.ifname} is down")
    return problems
