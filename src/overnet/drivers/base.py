"""The driver interface: how one kind of network connects containers on this host.

The agent owns the store side (records, addresses); a driver only turns "this container joins
or leaves this network" and "these are the network's remote endpoints" into kernel changes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from ..dataplane.worker import KernelThread
from ..store.records import NetworkRecord


@dataclass(frozen=True)
class Attachment:
    """One container's link to one network on this host."""
    container_ns: str      # path of the container's network namespace
    host_ifname: str       # the veth end the driver keeps on its side
    ip: str                # address without prefix
    prefixlen: int
    mac: str


@dataclass(frozen=True)
class RemotePeer:
    mac: str
    ip: str
    vtep: str              # underlay address of the host it lives on


class Driver(abc.ABC):
    name: str = ""
    scope: str = "local"           # "global" networks live in the store
    needs_netns: bool = True       # False for host networking
    needs_address: bool = True     # False for null and host

    def __init__(self, kernel: KernelThread, state_dir: str, advertise: str, mtu: int) -> None:
        self.kernel = kernel
        self.state_dir = state_dir
        self.advertise = advertise
        self.underlay_mtu = mtu

    async def join(self, net: NetworkRecord, att: Attachment) -> None:
        """Connect a container (its netns exists) to the network."""

    async def leave(self, net: NetworkRecord, att: Attachment) -> None:
        """Disconnect it; missing pieces are fine."""

    async def sync(self, net: NetworkRecord, peers: set[RemotePeer], active: bool) -> None:
        """Make the kernel hold exactly `peers` for the network (active: this host has
        containers on it; inactive: remove what the network left on this host)."""

    async def adopt(self, active_nets: dict[str, NetworkRecord]) -> None:
        """At start: take over (or remove) kernel state an earlier run left behind."""
