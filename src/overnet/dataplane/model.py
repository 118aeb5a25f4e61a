"""What the data plane and its callers exchange: constants, the error, records, input checks.

Nothing here touches the kernel, so the real data plane and the in-memory fake share it: the
same names, the same validation and the same error messages on bad input.
"""

from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import dataclass, field

BRIDGE = "br0"          # a bridge's default name (and of an overlay namespace before macvlans)
VXLAN = "vxlan0"        # the overlay network's vxlan device, lower device of its macvlans
GATEWAY = "gw0"         # the overlay network's own macvlan, holding the gateway address
VXLAN_PORT = 4789       # IANA VXLAN port (flannel's vxlan backend uses 8472)
VXLAN_OVERHEAD = 50     # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
IFNAMSIZ = 15           # usable characters of a Linux interface name
LOOPBACK_INDEX = 1      # lo is ifindex 1 in every network namespace
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


class DataplaneError(Exception):
    """A kernel operation failed; the message names the device, namespace and value."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # errno when the kernel gave one


@dataclass(frozen=True)
class LinkInfo:
    """One network device as the kernel holds it (what `link_info` / `links` return)."""

    name: str
    index: int                  # ifindex, unique within its namespace
    kind: str | None            # "veth", "bridge", "vxlan", ...; None for lo or plain devices
    mtu: int
    mac: str                    # lower case
    up: bool                    # administratively up (IFF_UP)
    master: str | None = None   # name of the bridge it is a port of
    addresses: list[str] = field(default_factory=list)  # IPv4 "ip/prefixlen", sorted
    peer_index: int | None = None  # veth only: ifindex of the other end (in its namespace)


@dataclass(frozen=True)
class VxlanPeer:
    """A remote host of a flannel vxlan network, as its lease describes it."""

    subnet: str         # "10.1.6.0/24"
    public_ip: str      # the remote host's underlay address (VTEP)
    vtep_mac: str       # its flannel.N device's MAC


@dataclass(frozen=True)
class GwRoute:
    """A host-gw route: a remote host's subnet via its underlay address."""

    subnet: str
    gateway: str


def check_ifname(name: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise DataplaneError(f"invalid interface name {name!r}: 1 to {IFNAMSIZ} characters, "
                             "no '/' or whitespace", errno.EINVAL)


def check_mac(mac: str) -> None:
    """Raise ValueError (callers wrap it with what they were doing) on a malformed MAC."""
    if not _MAC.fullmatch(mac):
        raise ValueError(f"malformed MAC address {mac!r}")


def attach_input(container_ns: str, ifname: str, ip_cidr: str, mac: str, mtu: int,
                 onto: str) -> tuple[str, ipaddress.IPv4Interface]:
    """A container attachment's input, checked before anything is touched (the kernel's and
    the fake's alike): returns what the operation's errors say ("cannot attach ... `onto`")
    and the parsed address; raises a DataplaneError (EINVAL) naming a bad name, address or
    MAC."""
    check_ifname(ifname)
    what = f"cannot attach {container_ns} ({ifname} {ip_cidr} {mac} mtu {mtu}) {onto}"
    try:
        addr = ipaddress.IPv4Interface(ip_cidr)
        check_mac(mac)
    except ValueError as exc:
        raise DataplaneError(f"{what}: {exc}", errno.EINVAL) from exc
    return what, addr

