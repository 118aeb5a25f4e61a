"""Reading devices: what a namespace holds, as LinkInfo records, and the underlay's MTU.

Reads never cache a socket for a namespace the Kernel does not already program (containers),
so reading a container's devices does not keep its namespace alive.
"""

from __future__ import annotations

import errno
from socket import AF_INET
from typing import Any

from overnet.dataplane.model import DataplaneError, LinkInfo, check_ifname
from overnet.dataplane.plumbing import IFF_UP, Netlink, attr, failing, get_link, ipv4_addresses


def underlay_mtu(k: Netlink, address: str) -> int:
    """MTU of the device holding IPv4 `address` in the host namespace."""
    ipr = k.socket(None)
    with failing(f"cannot read the MTU of the device holding {address}"):
        for msg in ipr.addr("dump", family=AF_INET):
            if msg.get("address") == address:
                return int(ipr.link("get", index=msg["index"])[0].get("mtu"))
    raise DataplaneError(f"no device holds address {address} in the {k.label(None)}",
                         errno.EADDRNOTAVAIL)


def link_info(k: Netlink, path: str | None, ifname: str) -> LinkInfo | None:
    """The device `ifname` of a namespace (None: host), or None if there is none.

    Raises DataplaneError naming the namespace if it does not exist.
    """
    check_ifname(ifname)
    with failing(f"cannot read {ifname} in {k.label(path)}"), k.reader(path) as ipr:
        link = get_link(ipr, ifname)
        if link is None:
            return None
        addrs = ipv4_addresses(ipr, link["index"])
        master = link.get("master")
        names = {master: ipr.link("get", index=master)[0].get("ifname")} if master else {}
        return _info(link, addrs, names)


def links(k: Netlink, path: str | None) -> list[LinkInfo]:
    """Every device of a namespace (None: host), by ifindex."""
    with failing(f"cannot list the devices of {k.label(path)}"), k.reader(path) as ipr:
        dump = list(ipr.link("dump"))
        names = {m["index"]: m.get("ifname") for m in dump}
        addrs = ipv4_addresses(ipr)
        return sorted((_info(m, addrs, names) for m in dump), key=lambda i: i.index)


def _info(link: Any, addrs: dict[int, set[tuple[str, int]]], names: dict[int, str]
          ) -> LinkInfo:
    index = int(link["index"])
    kind = attr(link, "linkinfo", "kind")
    master = link.get("master")
    return LinkInfo(
        name=link.get("ifname"), index=index, kind=kind, mtu=int(link.get("mtu")),
        mac=(link.get("address") or "").lower(), up=bool(link["flags"] & IFF_UP),
        master=names.get(master) if master else None,
        addresses=sorted(f"{a}/{p}" for a, p in addrs.get(index, set())),
        # IFLA_LINK of a veth is its peer's ifindex, in the peer's namespace.
        peer_index=link.get("link") if kind == "veth" else None)

