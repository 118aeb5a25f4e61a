"""Plugging containers into a bridge with a veth pair, and unplugging them.

The host end lives in the network's namespace (or the host namespace for the local bridge
driver) as a port of the bridge; the container end is born inside the container's namespace,
already named, addressed by MAC and sized, so nothing is moved or renamed afterwards.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from overnet.dataplane import netns
from overnet.dataplane.model import BRIDGE, LOOPBACK_INDEX, DataplaneError, check_ifname, check_mac
from overnet.dataplane.plumbing import (
    IFF_UP as _IFF_UP,
)
from overnet.dataplane.plumbing import (
    Netlink,
    attr,
    delete_link,
    echoed,
    ensure_addresses,
    failing,
    get_link,
    ns_fd,
)


def attach(k: Netlink, net_ns: str | None, container_ns: str, host_ifname: str, ip_cidr: str,
           mac: str, mtu: int, gateway: str | None = None, bridge: str = BRIDGE,
           ifname: str = "eth0") -> None:
    """Plug a container into `bridge` of `net_ns` (None: host namespace) with a veth pair.

    The container end is created directly inside the container namespace, named `ifname`,
    with `ip_cidr`, `mac` and `mtu`, up, plus `lo` up and (if given) a default route via
    `gateway`. Calling it again converges an existing pair instead of failing; a failed call
    leaves no pair behind that it created.
    """
    check_ifname(host_ifname)
    check_ifname(ifname)
    what = (f"cannot attach {container_ns} ({ifname} {ip_cidr} {mac} mtu {mtu}) via "
            f"{host_ifname} to {bridge} in {k.label(net_ns)}")
    with failing(what):
        addr = ipaddress.IPv4Interface(ip_cidr)
        check_mac(mac)
    ipr = k.socket(net_ns)
    with failing(what), k.transient(container_ns) as cipr:
        pair = _Pair(ipr, cipr, container_ns, host_ifname, ifname, mac.lower(), mtu, what)
        fresh, index = _with_bridge(k, net_ns, bridge, what, pair.plug)
        try:
            _configure_container(cipr, index, addr, gateway, fresh)
        except BaseException:
            if fresh:  # do not leave a half-configured pair behind
                try:
                    delete_link(k, net_ns, host_ifname)
                except DataplaneError:
                    pass  # the original error matters more
            raise


def detach(k: Netlink, net_ns: str | None, host_ifname: str) -> None:
    """Delete a container's veth (its peer goes with it); no error if it is gone."""
    if net_ns is not None and not k.knows(net_ns) and not netns.is_netns(net_ns):
        return  # the whole network namespace is gone, and the veth with it
    delete_link(k, net_ns, host_ifname)


def _with_bridge(k: Netlink, path: str | None, bridge: str, what: str,
                 plug: Callable[[int], tuple[bool, int]]) -> tuple[bool, int]:
    """Run `plug(bridge ifindex)`; if it fails with a remembered index, look the bridge up
    again once (it may have been recreated behind our back)."""
    master = k.index(path, bridge)
    if master is None:
        raise DataplaneError(f"{what}: no bridge {bridge}", errno.ENODEV)
    try:
        return plug(master)
    except NetlinkError:
        again = k.index(path, bridge, refresh=True)
        if again is None:
            raise DataplaneError(f"{what}: no bridge {bridge}", errno.ENODEV) from None
        if again == master:
            raise
        return plug(again)


def _configure_container(cipr: IPRoute, index: int, addr: ipaddress.IPv4Interface,
                         gateway: str | None, fresh: bool) -> None:
    if fresh:  # nothing to compare with: skip the address dump
        cipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        cipr.link("set", index=index, state="up")  # a veth peer is born down
    else:  # adopt() brought an existing end up
        ensure_addresses(cipr, index, addr)
    cipr.link("set", index=LOOPBACK_INDEX, state="up")
    if gateway is not None:
        cipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)


@dataclass
class _Pair:
    """The veth pair one attach call wants: host end in `ipr`'s namespace, `ifname` in the
    container (`cipr`)."""

    ipr: IPRoute
    cipr: IPRoute
    container_ns: str
    host_ifname: str
    ifname: str
    mac: str
    mtu: int
    what: str  # the attach call, for error messages

    def plug(self, master: int) -> tuple[bool, int]:
        """Create the pair, or converge the existing one. Returns (created, container ifindex).

        Optimistic: a fresh container is the common case, so create first and only inspect
        what exists when the kernel says a name is taken.
        """
        index = self.create(master, quiet=True)
        if index is not None:
            return True, index
        return self.adopt(master)

    def create(self, master: int, quiet: bool = False) -> int | None:
        """Create the pair with its peer born inside the container (no move, no rename) and
        return the container end's ifindex; None instead of EEXIST when `quiet`."""
        try:
            with ns_fd(self.container_ns) as fd, echoed(self.ipr):
                reply = self.ipr.link(
                    "add", ifname=self.host_ifname, kind="veth", mtu=self.mtu, master=master,
                    state="up", peer={"ifname": self.ifname, "net_ns_fd": fd,
                                      "address": self.mac, "mtu": self.mtu})
        except NetlinkError as exc:
            if quiet and exc.code == errno.EEXIST:
                return None
            raise
        # The echoed host end names its peer (IFLA_LINK); kernels before 6.3 echo nothing.
        peer = next((m.get("link") for m in reply or () if m.get("ifname") == self.host_ifname),
                    None)
        return int(peer) if peer else int(self.cipr.link("get", ifname=self.ifname)[0]["index"])

    def adopt(self, master: int) -> tuple[bool, int]:
        """Converge an existing pair, or replace a stale host end, or refuse a name clash."""
        host = get_link(self.ipr, self.host_ifname)
        peer = get_link(self.cipr, self.ifname)
        if host is not None and not _paired(host, peer):
            # A leftover host end whose partner is not this container's device: start over.
            self.ipr.link("del", index=host["index"])
            host = None
        if host is None:
            if peer is not None:
                raise DataplaneError(f"{self.what}: the container already has a device named "
                                     f"{self.ifname}", errno.EEXIST)
            index = self.create(master)
            assert index is not None
            return True, index
        assert peer is not None  # _paired
        # Only what differs is set: a repeated attach is mostly reads.
        if not _has(host, master, self.mtu):
            self.ipr.link("set", index=host["index"], master=master, mtu=self.mtu, state="up")
        if not _has(peer, None, self.mtu) or peer.get("address") != self.mac:
            self.cipr.link("set", index=peer["index"], address=self.mac, mtu=self.mtu,
                           state="up")
        return False, int(peer["index"])


def _has(link: Any, master: int | None, mtu: int) -> bool:
    """True if a link is up, with that MTU (and that master, if given)."""
    return (bool(link["flags"] & _IFF_UP) and link.get("mtu") == mtu
            and (master is None or link.get("master") == master))


def _paired(host: Any, peer: Any | None) -> bool:
    """True if two veth ends point at each other (IFLA_LINK is the peer's ifindex)."""
    return (peer is not None and attr(peer, "linkinfo", "kind") == "veth"
            and host.get("link") == peer["index"] and peer.get("link") == host["index"])
