"""Bridges: the local bridge driver's bridge in the host namespace (it holds the network's
gateway address)."""

from __future__ import annotations

import errno
import ipaddress
import os

from overnet.dataplane.model import DataplaneError, check_ifname
from overnet.dataplane.plumbing import (
    Netlink,
    attr,
    delete_link,
    ensure_addresses,
    failing,
    get_link,
)


def ensure_bridge_in(k: Netlink, path: str | None, name: str, gateway_cidr: str,
                     mtu: int) -> int:
    """A bridge `name` in namespace `path` holding only `gateway_cidr`, `mtu`, up.

    Returns its ifindex. A device of that name that is not a bridge is an error.
    """
    check_ifname(name)
    where = k.label(path)
    ipr = k.socket(path)
    with failing(f"cannot set up bridge {name} ({gateway_cidr}, mtu {mtu}) in {where}"):
        gw = ipaddress.IPv4Interface(gateway_cidr)
        link = get_link(ipr, name)
        if link is None:
            # A MAC given at creation stays: left alone, a bridge takes the lowest MAC of its
            # ports, so a container joining could move the gateway's MAC under every other
            # container's ARP cache (their DNS and routed traffic unanswered until it expires).
            # (Set later, on a bridge without ports, it would leave operstate UNKNOWN.)
            ipr.link("add", ifname=name, kind="bridge", mtu=mtu, address=random_mac())
            link = ipr.link("get", ifname=name)[0]
        elif attr(link, "linkinfo", "kind") != "bridge":
            raise DataplaneError(f"{name} in {where} exists but is a "
                                 f"{attr(link, 'linkinfo', 'kind') or 'plain device'}, "
                                 "not a bridge", errno.EEXIST)
        idx = int(link["index"])
        ensure_addresses(ipr, idx, gw)
        # Setting the MTU explicitly also stops the bridge following its ports' MTUs.
        ipr.link("set", index=idx, mtu=mtu, state="up")
    k.remember(path, name, idx)
    return idx


def ensure_bridge(k: Netlink, name: str, gateway_cidr: str, mtu: int) -> None:
    """A bridge in the host namespace holding the gateway address (local bridge driver)."""
    ensure_bridge_in(k, None, name, gateway_cidr, mtu)


def remove_bridge(k: Netlink, name: str) -> None:
    """Delete a host-namespace bridge; no error if it does not exist."""
    delete_link(k, None, name)


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)
