"""Plugging containers into a bridge with a veth pair, and unplugging them.

The host end lives in the network's namespace (or the host namespace for the local bridge
driver) as a port of the bridge; the container end is born inside the container's namespace,
already named, addressed by MAC and sized, so nothing is moved or renamed afterwards.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from overnet.dataplane import netns
from overnet.dataplane.model import BRIDGE, LOOPBACK_INDEX, DataplaneError, check_ifname, check_mac
from overnet.dataplane.plumbing import (
    Netlink,
    attr,
    delete_link,
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
        br = get_link(ipr, bridge)
        if br is None:
            raise DataplaneError(f"{what}: no bridge {bridge}", errno.ENODEV)
        # Optimistic: a fresh container is the common case, so try to create first and
        # only inspect what exists when the kernel says a name is taken.
        fresh = _add_veth(ipr, container_ns, host_ifname, ifname, mac, mtu, br["index"],
                          quiet=True)
        if not fresh:
            _adopt_veth(ipr, cipr, container_ns, host_ifname, ifname, mac, mtu, br["index"],
                        what)
        try:
            _configure_container(cipr, ifname, addr, gateway, fresh)
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


def _configure_container(cipr: IPRoute, ifname: str, addr: ipaddress.IPv4Interface,
                         gateway: str | None, fresh: bool) -> None:
    index = cipr.link("get", ifname=ifname)[0]["index"]
    if fresh:  # nothing to compare with: skip the address dump
        cipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
    else:
        ensure_addresses(cipr, index, addr)
    cipr.link("set", index=index, state="up")
    cipr.link("set", index=LOOPBACK_INDEX, state="up")
    if gateway is not None:
        cipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)


def _add_veth(ipr: IPRoute, container_ns: str, host_ifname: str, ifname: str, mac: str,
              mtu: int, master: int, quiet: bool = False) -> bool:
    """Create the pair with its peer born inside the container (no move, no rename).

    Returns False instead of raising when `quiet` and a name is already taken.
    """
    try:
        with ns_fd(container_ns) as fd:
            ipr.link("add", ifname=host_ifname, kind="veth", mtu=mtu, master=master,
                     state="up", peer={"ifname": ifname, "net_ns_fd": fd, "address": mac,
                                       "mtu": mtu})
    except NetlinkError as exc:
        if quiet and exc.code == errno.EEXIST:
            return False
        raise
    return True


def _paired(host: Any, peer: Any | None) -> bool:
    """True if two veth ends point at each other (IFLA_LINK is the peer's ifindex)."""
    return (peer is not None and attr(peer, "linkinfo", "kind") == "veth"
            and host.get("link") == peer["index"] and peer.get("link") == host["index"])


def _adopt_veth(ipr: IPRoute, cipr: IPRoute, container_ns: str, host_ifname: str,
                ifname: str, mac: str, mtu: int, master: int, what: str) -> None:
    """Converge an existing pair, or replace a stale host end, or refuse a name clash."""
    host = get_link(ipr, host_ifname)
    peer = get_link(cipr, ifname)
    if host is not None and not _paired(host, peer):
        # A leftover host end whose partner is not this container's device: start over.
        ipr.link("del", index=host["index"])
        host = None
    if host is None:
        if peer is not None:
            raise DataplaneError(f"{what}: the container already has a device named "
                                 f"{ifname}", errno.EEXIST)
        _add_veth(ipr, container_ns, host_ifname, ifname, mac, mtu, master)
        return
    ipr.link("set", index=host["index"], master=master, mtu=mtu, state="up")
    if peer is not None and (peer.get("address") != mac.lower() or peer.get("mtu") != mtu):
        cipr.link("set", index=peer["index"], address=mac, mtu=mtu)
