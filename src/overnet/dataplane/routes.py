"""Kernel state of host subnets (flannel's backends), in the host namespace, over netlink.

vxlan:   one device flannel.<VNI> holding <subnet>.0/32; per remote host one onlink route
         (subnet via subnet.0 dev flannel.N), one permanent neighbour (subnet.0 -> VTEP MAC)
         and one FDB entry (VTEP MAC -> host's public IP), as flanneld programs them.
host-gw: per remote host one route (subnet via the host's public IP dev <underlay>), tagged
         with our own route protocol so we can tell ours from everyone else's.

Functions take the Kernel (run them on the agent's kernel thread:
`await kernel.run(routes.fn, args...)`); they use its cached host-namespace socket.
"""

from __future__ import annotations

import errno
import ipaddress
from socket import AF_INET
from typing import Any

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_NOARP, NUD_PERMANENT

from .model import DataplaneError, GwRoute, VxlanPeer
from .plumbing import Netlink, failing, get_link, ignore_missing

__all__ = ["GwRoute", "VxlanPeer", "enable_forwarding", "ensure_vxlan", "gw_routes",
           "remove_link", "sync_gw", "sync_vxlan", "underlay", "vxlan_peers"]

RTNH_F_ONLINK = 4
RTPROT_OVERNET = 111        # "proto 111" in `ip route`: host-gw routes this agent made
MAIN_TABLE = 254

IPv4Network = ipaddress.IPv4Network


def _host(k: Netlink) -> IPRoute:
    return k.socket(None)   # the Kernel's cached socket of the host namespace


def _vxlan_conf(link: Any) -> dict[str, Any]:
    data = link.get(("linkinfo", "data"))
    return {"vni": data.get("vxlan_id"), "port": data.get("vxlan_port"),
            "local": data.get("vxlan_local"), "learning": bool(data.get("vxlan_learning"))}


# --- underlay ------------------------------------------------------------------------------

def underlay(k: Netlink, address: str) -> tuple[int, list[str]]:
    """ifindex of the device holding `address`, and the networks on that device (its L2
    segment, as far as addresses tell)."""
    ipr = _host(k)
    with failing(f"cannot read the underlay device of {address}"):
        index = next((m["index"] for m in ipr.addr("dump", family=AF_INET)
                      if m.get("address") == address), None)
        if index is None:
            raise DataplaneError(f"no device holds address {address}", errno.EADDRNOTAVAIL)
        nets = [str(ipaddress.IPv4Interface(f"{m.get('address')}/{m['prefixlen']}").network)
                for m in ipr.addr("dump", family=AF_INET) if m["index"] == index]
        return index, nets


def enable_forwarding() -> bool:
    """net.ipv4.ip_forward=1 in the caller's network namespace; True if it was off.

    Host subnets are routed (container -> bridge -> host -> tunnel or gateway), which a
    fresh network namespace refuses: ip_forward starts at 0 there."""
    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path) as f:
        if f.read().strip() == "1":
            return False
    with open(path, "w") as f:
        f.write("1")
    return True


# --- vxlan ---------------------------------------------------------------------------------

def ensure_vxlan(k: Netlink, name: str, vni: int, local: str, port: int, mtu: int, mac: str,
                 address: str) -> str:
    """The flannel.N device (created, or fixed, or kept as it is) with MAC `mac`, holding
    `address`/32, up. Returns its MAC."""
    ipr = _host(k)
    want = {"vni": vni, "port": port, "local": local, "learning": False}
    with failing(f"cannot set up {name} (vni {vni}, port {port}, local {local}, mtu {mtu})"):
        link = get_link(ipr, name)
        if link is not None and (link.get(("linkinfo", "kind")) != "vxlan"
                                 or _vxlan_conf(link) != want):
            ipr.link("del", index=link["index"])
            link = None
        if link is None:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                     vxlan_port=port, vxlan_learning=0, mtu=mtu, address=mac)
            link = ipr.link("get", ifname=name)[0]
        index = link["index"]
        have = {(m.get("address"), m["prefixlen"]) for m in ipr.addr("dump", family=AF_INET)
                if m["index"] == index}
        for addr, plen in have - {(address, 32)}:
            ipr.addr("del", index=index, address=addr, prefixlen=plen)
        if (address, 32) not in have:
            ipr.addr("add", index=index, address=address, prefixlen=32)
        if link.get("address") != mac.lower():
            ipr.link("set", index=index, address=mac)
        ipr.link("set", index=index, mtu=mtu, state="up")
        return str(ipr.link("get", index=index)[0].get("address"))


def remove_link(k: Netlink, name: str) -> None:
    ipr = _host(k)
    with failing(f"cannot delete {name}"):
        link = get_link(ipr, name)
        if link is not None:
            ipr.link("del", index=link["index"])


def vxlan_peers(k: Netlink, name: str) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """What the device holds: route subnets, neighbours (ip -> mac), FDB (mac -> dst)."""
    ipr = _host(k)
    with failing(f"cannot read the peers of {name}"):
        link = get_link(ipr, name)
        if link is None:
            return set(), {}, {}
        index = link["index"]
        routes = {f"{m.get('dst')}/{m['dst_len']}"
                  for m in ipr.route("dump", family=AF_INET, table=MAIN_TABLE)
                  if m.get("oif") == index and m.get("dst") and m.get("table") == MAIN_TABLE}
        neigh = {m.get("dst"): m.get("lladdr") for m in ipr.neigh("dump", family=AF_INET)
                 if m["ifindex"] == index and m["state"] & NUD_PERMANENT}
        fdb = {m.get("lladdr"): m.get("dst") for m in ipr.fdb("dump", ifindex=index)
               if m["ifindex"] == index and m.get("dst") and m["state"] & NUD_PERMANENT}
        return routes, neigh, fdb


def sync_vxlan(k: Netlink, name: str, peers: set[VxlanPeer]) -> tuple[int, int]:
    """Make the device hold exactly `peers`. Returns (added, removed) counts of entries."""
    ipr = _host(k)
    routes, neigh, fdb = vxlan_peers(k, name)
    want_routes = {p.subnet for p in peers}
    want_neigh = {str(IPv4Network(p.subnet).network_address): p.vtep_mac for p in peers}
    want_fdb = {p.vtep_mac: p.public_ip for p in peers}
    added = removed = 0
    with failing(f"cannot program the peers of {name}"):
        link = get_link(ipr, name)
        if link is None:
            raise DataplaneError(f"no device {name}", errno.ENODEV)
        index = link["index"]
        # Removals first: a subnet moving to another host reuses its .0 address.
        for subnet in routes - want_routes:
            ignore_missing(ipr.route, "del", dst=subnet, oif=index, table=MAIN_TABLE)
            removed += 1
        for ip, mac in neigh.items():
            if want_neigh.get(ip) != mac:
                ignore_missing(ipr.neigh, "del", ifindex=index, dst=ip, lladdr=mac)
                removed += 1
        for mac, dst in fdb.items():
            if want_fdb.get(mac) != dst:
                ignore_missing(ipr.fdb, "del", ifindex=index, lladdr=mac, dst=dst)
                removed += 1
        # flanneld's order: neighbour, FDB, then the route that makes them used.
        for ip, mac in want_neigh.items():
            if neigh.get(ip) != mac:
                ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT)
                added += 1
        for mac, dst in want_fdb.items():
            if fdb.get(mac) != dst:
                ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst,
                        state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
                added += 1
        for subnet in want_routes - routes:
            gw = str(IPv4Network(subnet).network_address)
            ipr.route("replace", dst=subnet, gateway=gw, oif=index, flags=RTNH_F_ONLINK,
                      table=MAIN_TABLE)
            added += 1
    return added, removed


# --- host-gw -------------------------------------------------------------------------------

def gw_routes(k: Netlink) -> set[GwRoute]:
    ipr = _host(k)
    with failing("cannot read host-gw routes"):
        return {GwRoute(f"{m.get('dst')}/{m['dst_len']}", m.get("gateway"))
                for m in ipr.route("dump", family=AF_INET, table=MAIN_TABLE)
                if m["proto"] == RTPROT_OVERNET and m.get("dst") and m.get("gateway")}


def sync_gw(k: Netlink, oif: int, want: set[GwRoute]) -> tuple[int, int]:
    """Make our host-gw routes exactly `want` (all via the underlay device `oif`)."""
    ipr = _host(k)
    have = gw_routes(k)
    added = removed = 0
    with failing("cannot program host-gw routes"):
        for r in have - want:
            ignore_missing(ipr.route, "del", dst=r.subnet, gateway=r.gateway, table=MAIN_TABLE,
                   proto=RTPROT_OVERNET)
            removed += 1
        for r in want - have:
            ipr.route("replace", dst=r.subnet, gateway=r.gateway, oif=oif, table=MAIN_TABLE,
                      proto=RTPROT_OVERNET)
            added += 1
    return added, removed

