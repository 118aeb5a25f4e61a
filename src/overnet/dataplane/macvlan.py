"""Plugging containers into an overlay network: a macvlan of the network's vxlan0.

    network namespace                       container namespace
    vxlan0 (remote peers) --+-- gw0 (macvlan, the gateway address: DNS answers here)
                            +------------------------------------- eth0 (macvlan: ip, mac)

Each container interface is a bridge-mode macvlan whose lower device is the network's vxlan0,
born inside the container's namespace, already named, addressed by MAC and sized. Frames go from
the container straight to vxlan0's transmit (and back through its receive handler): no veth
pair, no bridge, no hand-over between CPUs' backlogs on the way. Containers of the network on
this host reach each other through the macvlan switch; ARP for a remote container is answered
by vxlan0's proxy from the neighbour entries of its peers. Deleting vxlan0 removes every
macvlan of it, wherever it is, so a removed network leaves no interface behind.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from pyroute2.iproute.linux import IPRoute

from overnet.crashpoints import crashpoint
from overnet.dataplane import netns, rtnl
from overnet.dataplane.model import VXLAN, DataplaneError, attach_input, check_ifname, check_mac
from overnet.dataplane.plumbing import (
    IFF_UP,
    Netlink,
    attr,
    ensure_addresses,
    failing,
    get_link,
    ignore_missing,
)
from overnet.dataplane.veth import configure_container, configure_fresh


def attach(k: Netlink, net_ns: str, container_ns: str, ip_cidr: str, mac: str, mtu: int,
           gateway: str | None = None, ifname: str = "eth0", fresh: bool = True) -> None:
    """Plug a container into the overlay network of `net_ns`: a macvlan of its vxlan0 named
    `ifname` in `container_ns`, with `ip_cidr`, `mac` and `mtu`, up, plus `lo` up and (if
    given) a default route via `gateway`. Calling it again converges; a failed call leaves no
    device behind that it created. `fresh=False`: the packed requests were tried already
    (fastpath.py), go straight to converging."""
    what, addr = attach_input(container_ns, ifname, ip_cidr, mac, mtu,
                              f"to {VXLAN} in {k.label(net_ns)}")
    mac = mac.lower()
    if fresh and _attach_fresh(k, net_ns, container_ns, ifname, addr, mac, mtu, gateway):
        return
    with failing(what), k.transient(container_ns) as cipr:
        link = get_link(cipr, ifname)
        if link is not None and earlier(link, mac):
            cipr.link("del", index=link["index"])      # (its other end goes with it)
            link = None
        made = link is None
        if made:
            _create(k, net_ns, container_ns, ifname, mac, mtu, what)
            link = cipr.link("get", ifname=ifname)[0]
        elif not ours(link, mac):
            raise DataplaneError(f"{what}: the container already has a device named {ifname}",
                                 errno.EEXIST)
        try:
            if link.get("mtu") != mtu or not link["flags"] & IFF_UP:
                cipr.link("set", index=link["index"], mtu=mtu, state="up")
            configure_container(cipr, int(link["index"]), addr, gateway, made)
        except BaseException:
            if made:   # no half-configured device left behind
                ignore_missing(cipr.link, "del", index=link["index"])
            raise


def _attach_fresh(k: Netlink, net_ns: str, container_ns: str, ifname: str,
                  addr: ipaddress.IPv4Interface, mac: str, mtu: int,
                  gateway: str | None) -> bool:
    """The common case, a new container, by hand-packed requests alone (plug_fresh). False
    when anything is not as expected: attach() then converges the slow way and says what is
    wrong."""
    lower = k.index(net_ns, VXLAN)
    if lower is None:
        return False
    try:
        with k.fd(container_ns) as cfd, k.transient_rtnl(cfd) as craw:
            return plug_fresh(k.rtnl(net_ns), craw, lower, cfd, ifname, mac, mtu, addr,
                              gateway, f"configuring {ifname} in {container_ns}")
    except OSError:
        return False


def plug_fresh(sock: rtnl.Rtnl, craw: rtnl.Rtnl, lower: int, cfd: int, ifname: str, mac: str,
               mtu: int, addr: ipaddress.IPv4Interface, gateway: str | None, what: str) -> bool:
    """A new container's macvlan in three round trips: made by `sock` (of the network's
    namespace) in the namespace open as `cfd`, its ifindex read and it configured by `craw`
    (a socket in that namespace). False if nothing was made (the name is taken, `lower` is
    stale); an OSError once it was: a configuration the kernel refused is raised after the
    device went again. Whatever is left, attach() converges."""
    flags, body = rtnl.new_macvlan(ifname, lower, mac, mtu, cfd)
    [made] = sock.requests([(rtnl.RTM_NEWLINK, flags, body)])
    if made.error:
        return False
    crashpoint("macvlan:created")   # mid-netlink: the device exists, unconfigured
    [got] = craw.requests([(rtnl.RTM_GETLINK, 0, rtnl.get_link(ifname))])
    if got.error or not got.links:
        raise rtnl.RtnlError(got.error or errno.ENODEV, f"the new {ifname} is not to be found")
    index = got.links[0][0]
    try:
        configure_fresh(craw, index, addr, gateway, what)
    except BaseException:
        craw.requests([(rtnl.RTM_DELLINK, 0, rtnl.ifinfo(index))])
        raise
    return True


def handover(k: Netlink, net_ns: str, peer_ifname: str, mac: str, mtu: int) -> None:
    """A macvlan of the network's vxlan0 for a runtime that moves it into the container itself
    (Docker's remote drivers): `peer_ifname` left down in the home (host) namespace with `mac`
    and `mtu`, no address. Calling it again with the device still there changes nothing."""
    check_ifname(peer_ifname)
    what = (f"cannot make {peer_ifname} ({mac} mtu {mtu}) for hand-over on {VXLAN} in "
            f"{k.label(net_ns)}")
    with failing(what):
        check_mac(mac)
    with failing(what):
        link = get_link(k.socket(None), peer_ifname)
        if link is not None:
            if ours(link, mac.lower()):
                return
            raise DataplaneError(f"{what}: the host namespace already has a device named "
                                 f"{peer_ifname}", errno.EEXIST)
        _create(k, net_ns, None, peer_ifname, mac.lower(), mtu, what, up=False)


def _create(k: Netlink, net_ns: str, target_ns: str | None, ifname: str, mac: str,
            mtu: int, what: str, up: bool = True) -> None:
    lower = k.index(net_ns, VXLAN, refresh=True)
    if lower is None:
        raise DataplaneError(f"{what}: no {VXLAN}", errno.ENODEV)
    with k.fd(target_ns) as fd:
        k.socket(net_ns).link("add", ifname=ifname, kind="macvlan", macvlan_mode="bridge",
                              link=lower, address=mac, mtu=mtu, net_ns_fd=fd,
                              state="up" if up else "down")
    crashpoint("macvlan:created")


def detach(k: Netlink, ns_path: str | None, ifname: str, mac: str) -> None:
    """Delete the macvlan `ifname` of `ns_path` (None: the host namespace, where Docker puts
    back a device it was handed) if it is the one with `mac`; no error if it is gone, or its
    namespace is (the device went with it)."""
    if ns_path is not None and not netns.is_netns(ns_path):
        return
    with failing(f"cannot delete {ifname} in {k.label(ns_path)}"), k.reader(ns_path) as ipr:
        _delete_ours(ipr, ifname, mac.lower())


def _delete_ours(ipr: IPRoute, ifname: str, mac: str) -> None:
    link = get_link(ipr, ifname)
    if link is not None and ours(link, mac):
        ignore_missing(ipr.link, "del", index=link["index"])


def ours(link: Any, mac: str) -> bool:
    """A macvlan with this endpoint's MAC (a MAC is unique to its endpoint)."""
    return (attr(link, "linkinfo", "kind") == "macvlan"
            and (link.get("address") or "").lower() == mac)


def earlier(link: Any, mac: str) -> bool:
    """This endpoint's interface as overnet made it before macvlans: the container end of a
    veth pair whose other end was a port of the network's bridge (the MAC is the endpoint's)."""
    return (attr(link, "linkinfo", "kind") == "veth"
            and (link.get("address") or "").lower() == mac)


def ensure_gateway(k: Netlink, ns_path: str, name: str, lower: int, gateway_cidr: str,
                   mtu: int) -> int:
    """The network's own macvlan `name` of `lower` in `ns_path`, holding only the gateway
    address, `mtu`, up: what the containers' default route and DNS point at. Returns its
    ifindex. A device of that name that is not a macvlan of `lower` is replaced."""
    ipr = k.socket(ns_path)
    with failing(f"cannot set up {name} ({gateway_cidr}, mtu {mtu}) in {k.label(ns_path)}"):
        gw = ipaddress.IPv4Interface(gateway_cidr)
        link = get_link(ipr, name)
        if link is not None and (attr(link, "linkinfo", "kind") != "macvlan"
                                 or link.get("link") != lower):
            ipr.link("del", index=link["index"])
            link = None
        if link is None:
            ipr.link("add", ifname=name, kind="macvlan", macvlan_mode="bridge", link=lower,
                     mtu=mtu)
            link = ipr.link("get", ifname=name)[0]
        index = int(link["index"])
        ensure_addresses(ipr, index, gw)
        ipr.link("set", index=index, mtu=mtu, state="up")
    k.remember(ns_path, name, index)
    return index
