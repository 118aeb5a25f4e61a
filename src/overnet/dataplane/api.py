"""The data plane seam: everything the agent and the drivers ask of the kernel, as one
abstract class of async methods.

Implementations: `NetlinkDataplane` (below; the real kernel, every call on the agent's one
kernel thread) and `overnet.dataplane.fake.FakeDataplane` (in memory, for unit tests of the
logic above). tests/integration/test_dataplane_contract.py runs the same scenarios against
both, which is what keeps the fake faithful.

Namespaces are named by path; `None` means the host namespace. Every method is idempotent
(ensure/attach converge what exists; remove/detach of what is gone is fine) and raises
DataplaneError with a message naming the device, namespace and bad value.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from overnet.dataplane import netns, routes
from overnet.dataplane.fastpath import LoopAttach
from overnet.dataplane.kernel import Kernel
from overnet.dataplane.model import (
    BRIDGE,
    VXLAN,
    VXLAN_OVERHEAD,
    VXLAN_PORT,
    DataplaneError,
    GwRoute,
    LinkInfo,
    VxlanPeer,
)
from overnet.dataplane.plumbing import failing
from overnet.dataplane.worker import KernelThread

__all__ = ["BRIDGE", "VXLAN", "VXLAN_OVERHEAD", "VXLAN_PORT", "Dataplane", "DataplaneError",
           "GwRoute", "LinkInfo", "NetlinkDataplane", "Peer", "VxlanPeer"]

T = TypeVar("T")
Peer = tuple[str, str, str]  # (mac, ip, vtep_ip) of a remote endpoint of an overlay network


class Dataplane(abc.ABC):
    """What the kernel must hold, asked for asynchronously (layout: see vxlan.py)."""

    # -- namespaces ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_netns(self, path: str) -> None:
        """A network namespace pinned at `path`, with lo up (idempotent)."""

    @abc.abstractmethod
    async def delete_netns(self, path: str) -> None:
        """Unpin the namespace at `path` (its devices go with it); no error if absent."""

    @abc.abstractmethod
    async def list_netns(self, directory: str) -> list[str]:
        """Names of the namespaces pinned in `directory`, sorted ([] if it does not exist)."""

    @abc.abstractmethod
    async def is_netns(self, path: str) -> bool:
        """True if a network namespace is pinned at `path`."""

    @abc.abstractmethod
    async def ensure_private_dir(self, directory: str) -> None:
        """`directory` exists as a mount point with private propagation (idempotent)."""

    # -- host -----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def underlay_mtu(self, address: str) -> int:
        """MTU of the host device holding IPv4 `address`."""

    # -- bridge in the host namespace (local bridge driver) ------------------------------------
    @abc.abstractmethod
    async def ensure_bridge(self, name: str, gateway_cidr: str, mtu: int) -> None:
        """A host bridge holding only `gateway_cidr`, with `mtu`, up."""

    @abc.abstractmethod
    async def remove_bridge(self, name: str) -> None:
        """Delete a host bridge; no error if absent."""

    # -- overlay network namespace (vxlan0 + gw0) ---------------------------------------------
    @abc.abstractmethod
    async def ensure_overlay(self, ns_path: str, vni: int, gateway_cidr: str, mtu: int,
                             local_ip: str, port: int = VXLAN_PORT) -> None:
        """Namespace `ns_path` with vxlan0 (vni, port, local, mtu, up) and gw0 (its macvlan:
        gateway, mtu, up); a changed vxlan0 is recreated, the bridge of an earlier layout
        removed. A VNI already used on that port is an error; a namespace this call created
        is removed again on failure."""

    @abc.abstractmethod
    async def remove_overlay(self, ns_path: str) -> None:
        """Delete the network namespace and its devices; no error if absent."""

    @abc.abstractmethod
    async def vxlan_info(self, ns_path: str) -> dict[str, Any]:
        """vni, port, local, learning, proxy, l2miss, l3miss, mtu, master, up of vxlan0."""

    # -- containers ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def attach(self, net_ns: str | None, container_ns: str, host_ifname: str,
                     ip_cidr: str, mac: str, mtu: int, gateway: str | None = None,
                     bridge: str = BRIDGE, ifname: str = "eth0") -> None:
        """A veth pair: `host_ifname` a port of `bridge` in `net_ns`, `ifname` in the
        container with ip/mac/mtu, up, lo up, default route via `gateway` if given."""

    @abc.abstractmethod
    async def attach_macvlan(self, net_ns: str, container_ns: str, ip_cidr: str, mac: str,
                             mtu: int, gateway: str | None = None, ifname: str = "eth0"
                             ) -> None:
        """A macvlan of the vxlan0 of overlay namespace `net_ns`: `ifname` in the container
        with ip/mac/mtu, up, lo up, default route via `gateway` if given (macvlan.py)."""

    @abc.abstractmethod
    async def attach_handover(self, net_ns: str, peer_ifname: str, mac: str, mtu: int) -> None:
        """A macvlan of the vxlan0 of `net_ns` whose container end the runtime moves itself
        (Docker): `peer_ifname` down in the host namespace with `mac` and `mtu`."""

    @abc.abstractmethod
    async def detach_macvlan(self, ns_path: str | None, ifname: str, mac: str) -> None:
        """Delete the macvlan `ifname` with `mac` of `ns_path` (None: the host namespace);
        no error if it, or its namespace, is gone."""

    @abc.abstractmethod
    async def detach(self, net_ns: str | None, host_ifname: str) -> None:
        """Delete the container's veth pair; no error if it (or `net_ns`) is gone."""

    @abc.abstractmethod
    async def link_info(self, ns_path: str | None, ifname: str) -> LinkInfo | None:
        """One device of a namespace, or None; an absent namespace is an error."""

    @abc.abstractmethod
    async def links(self, ns_path: str | None) -> list[LinkInfo]:
        """Every device of a namespace, by ifindex; an absent namespace is an error."""

    # -- remote peers of an overlay network ----------------------------------------------------
    @abc.abstractmethod
    async def peers(self, ns_path: str) -> set[Peer]:
        """(mac, ip, vtep) of the remote endpoints programmed on vxlan0."""

    @abc.abstractmethod
    async def add_peer(self, ns_path: str, mac: str, ip: str, vtep: str) -> None:
        """Static FDB (mac -> vtep) and neighbour (ip -> mac) entries (replacing)."""

    async def add_peers(self, ns_path: str, peers: list[Peer]) -> None:
        """add_peer for each (mac, ip, vtep); an implementation may batch them."""
        for mac, ip, vtep in peers:
            await self.add_peer(ns_path, mac, ip, vtep)

    @abc.abstractmethod
    async def remove_peer(self, ns_path: str, mac: str, ip: str, vtep: str) -> None:
        """Remove that exact peer's entries; entries of a newer endpoint (mac moved to
        another vtep, ip now another mac) stay; no error if gone."""

    # -- host subnets (flannel backends), host namespace ---------------------------------------
    @abc.abstractmethod
    async def underlay(self, address: str) -> tuple[int, list[str]]:
        """ifindex of the device holding `address`, and the networks on that device."""

    @abc.abstractmethod
    async def enable_forwarding(self) -> bool:
        """net.ipv4.ip_forward=1 in the host namespace; True if it was off."""

    @abc.abstractmethod
    async def ensure_vxlan(self, name: str, vni: int, local: str, port: int, mtu: int,
                           mac: str, address: str) -> str:
        """The flannel.N device with `mac`, holding `address`/32, up. Returns its MAC."""

    @abc.abstractmethod
    async def remove_link(self, name: str) -> None:
        """Delete a host device; no error if absent."""

    @abc.abstractmethod
    async def vxlan_peers(self, name: str) -> tuple[set[str], dict[str, str], dict[str, str]]:
        """Route subnets, neighbours (ip -> mac) and FDB (mac -> dst) of a flannel device."""

    @abc.abstractmethod
    async def sync_vxlan(self, name: str, peers: set[VxlanPeer]) -> tuple[int, int]:
        """Make the device hold exactly `peers`; (added, removed) entry counts."""

    @abc.abstractmethod
    async def gw_routes(self) -> set[GwRoute]:
        """The host-gw routes this agent made (route protocol 111)."""

    @abc.abstractmethod
    async def sync_gw(self, oif: int, want: set[GwRoute]) -> tuple[int, int]:
        """Make our host-gw routes exactly `want`, via device `oif`; (added, removed)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what the implementation holds (idempotent)."""


class NetlinkDataplane(Dataplane):
    """The real kernel: every call runs on one kernel thread, which owns the Kernel.

    `host_ns` is the namespace treated as the host (default: the agent's own); pass `thread`
    instead to share a KernelThread with code that still calls `thread.run(...)` itself.
    """

    def __init__(self, host_ns: str | None = None, thread: KernelThread | None = None) -> None:
        if thread is not None and host_ns is not None:
            raise ValueError("give host_ns or thread, not both")
        self.thread = thread or KernelThread(host_ns)
        self.fast = LoopAttach()    # a new container's pair, without the kernel thread
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        return await self.thread.run(fn, *args)

    def _check_open(self) -> None:
        if self._closed:
            raise DataplaneError("the data plane is closed")

    async def create_netns(self, path: str) -> None:
        await self._run(_create_netns, path)

    async def delete_netns(self, path: str) -> None:
        self.fast.forget(path)   # its socket would keep the namespace alive
        await self._run(_delete_netns, path)

    async def list_netns(self, directory: str) -> list[str]:
        return await self._run(lambda k: netns.list_netns(directory))

    async def is_netns(self, path: str) -> bool:
        self._check_open()
        return netns.is_netns(path)    # a few syscalls on a file: no need for the kernel thread

    async def ensure_private_dir(self, directory: str) -> None:
        await self._run(_ensure_private_dir, directory)

    async def underlay_mtu(self, address: str) -> int:
        return await self._run(Kernel.underlay_mtu, address)

    async def ensure_bridge(self, name: str, gateway_cidr: str, mtu: int) -> None:
        await self._run(Kernel.ensure_bridge, name, gateway_cidr, mtu)

    async def remove_bridge(self, name: str) -> None:
        await self._run(Kernel.remove_bridge, name)

    async def ensure_overlay(self, ns_path: str, vni: int, gateway_cidr: str, mtu: int,
                             local_ip: str, port: int = VXLAN_PORT) -> None:
        await self._run(Kernel.ensure_overlay, ns_path, vni, gateway_cidr, mtu, local_ip, port)

    async def remove_overlay(self, ns_path: str) -> None:
        self.fast.forget(ns_path)
        await self._run(Kernel.remove_overlay, ns_path)

    async def vxlan_info(self, ns_path: str) -> dict[str, Any]:
        return await self._run(Kernel.vxlan_info, ns_path)

    async def attach(self, net_ns: str | None, container_ns: str, host_ifname: str,
                     ip_cidr: str, mac: str, mtu: int, gateway: str | None = None,
                     bridge: str = BRIDGE, ifname: str = "eth0") -> None:
        await self._run(Kernel.attach, net_ns, container_ns, host_ifname, ip_cidr, mac, mtu,
                        gateway, bridge, ifname)

    async def attach_macvlan(self, net_ns: str, container_ns: str, ip_cidr: str, mac: str,
                             mtu: int, gateway: str | None = None, ifname: str = "eth0"
                             ) -> None:
        self._check_open()
        if self.fast.attach(net_ns, container_ns, ip_cidr, mac, mtu, gateway, ifname):
            return
        # what the fast path could not do (a device to converge, a name taken): not tried twice
        await self._run(Kernel.attach_macvlan, net_ns, container_ns, ip_cidr, mac, mtu,
                        gateway, ifname, False)

    async def attach_handover(self, net_ns: str, peer_ifname: str, mac: str, mtu: int) -> None:
        await self._run(Kernel.attach_handover, net_ns, peer_ifname, mac, mtu)

    async def detach_macvlan(self, ns_path: str | None, ifname: str, mac: str) -> None:
        await self._run(Kernel.detach_macvlan, ns_path, ifname, mac)

    async def detach(self, net_ns: str | None, host_ifname: str) -> None:
        await self._run(Kernel.detach, net_ns, host_ifname)

    async def link_info(self, ns_path: str | None, ifname: str) -> LinkInfo | None:
        return await self._run(Kernel.link_info, ns_path, ifname)

    async def links(self, ns_path: str | None) -> list[LinkInfo]:
        return await self._run(Kernel.links, ns_path)

    async def peers(self, ns_path: str) -> set[Peer]:
        return await self._run(Kernel.peers, ns_path)

    async def add_peer(self, ns_path: str, mac: str, ip: str, vtep: str) -> None:
        await self._run(Kernel.add_peer, ns_path, mac, ip, vtep)

    async def add_peers(self, ns_path: str, peers: list[Peer]) -> None:
        await self._run(Kernel.add_peers, ns_path, list(peers))

    async def remove_peer(self, ns_path: str, mac: str, ip: str, vtep: str) -> None:
        await self._run(Kernel.remove_peer, ns_path, mac, ip, vtep)

    async def underlay(self, address: str) -> tuple[int, list[str]]:
        return await self._run(Kernel.underlay, address)

    async def enable_forwarding(self) -> bool:
        return await self._run(_enable_forwarding)

    async def ensure_vxlan(self, name: str, vni: int, local: str, port: int, mtu: int,
                           mac: str, address: str) -> str:
        return await self._run(Kernel.ensure_vxlan, name, vni, local, port, mtu, mac, address)

    async def remove_link(self, name: str) -> None:
        await self._run(Kernel.remove_link, name)

    async def vxlan_peers(self, name: str) -> tuple[set[str], dict[str, str], dict[str, str]]:
        return await self._run(Kernel.vxlan_peers, name)

    async def sync_vxlan(self, name: str, peers: set[VxlanPeer]) -> tuple[int, int]:
        return await self._run(Kernel.sync_vxlan, name, peers)

    async def gw_routes(self) -> set[GwRoute]:
        return await self._run(Kernel.gw_routes)

    async def sync_gw(self, oif: int, want: set[GwRoute]) -> tuple[int, int]:
        return await self._run(Kernel.sync_gw, oif, want)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.fast.close()
            await asyncio.get_running_loop().run_in_executor(None, self.thread.close)


# Namespace chores run on the kernel thread too, with errors named like the kernel's.

def _create_netns(k: Kernel, path: str) -> None:
    with failing(f"cannot create network namespace {path}"):
        netns.create_netns(path)


def _delete_netns(k: Kernel, path: str) -> None:
    k.forget(path)  # a cached socket would keep the namespace (and its devices) alive
    with failing(f"cannot delete network namespace {path}"):
        netns.delete_netns(path)


def _ensure_private_dir(k: Kernel, directory: str) -> None:
    with failing(f"cannot make {directory} a private mount"):
        netns.ensure_private_dir(directory)


def _enable_forwarding(k: Kernel) -> bool:
    with failing("cannot enable IPv4 forwarding"), k.at_home():
        return routes.enable_forwarding()  # /proc/sys/net is that of the calling thread
