"""Overlay networks: a namespace per network with vxlan0 and gw0, and its remote peers.

    host namespace            network namespace (<state>/netns/<id>)    container namespace
    underlay ip, UDP 4789 <-- vxlan0 (created here, moved) --+-- macvlan ------ eth0 (ip, mac)
                                 gw0 (macvlan: gateway) -----+

The vxlan device is created in the host namespace and then moved, so its UDP socket stays on the
underlay and every network shares the one port; remote endpoints are static FDB + neighbour
entries (learning off, ARP answered by the vxlan proxy). Containers are macvlans of vxlan0
(macvlan.py).
"""

from __future__ import annotations

import errno
import ipaddress
import secrets
from socket import AF_INET
from typing import Any

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT

from overnet.dataplane import netns, rtnl
from overnet.dataplane.macvlan import ensure_gateway
from overnet.dataplane.model import BRIDGE, GATEWAY, VXLAN, VXLAN_PORT, DataplaneError
from overnet.dataplane.plumbing import (
    Netlink,
    attr,
    failing,
    get_link,
    ignore_missing,
    ns_fd,
    single,
)

_TMP_PREFIX = "onvx"  # temporary name of a vxlan device before it moves into its namespace


def ensure_overlay(k: Netlink, ns_path: str, vni: int, gateway_cidr: str, mtu: int,
                   local_ip: str, port: int = VXLAN_PORT) -> None:
    """Network namespace with vxlan0 (mtu, up) and gw0 (its macvlan: gateway, mtu, up).

    If this call created the namespace and then fails, it removes it again.
    """
    with failing(f"cannot set up network namespace {ns_path}"):
        ipaddress.IPv4Address(local_ip)
        ipaddress.IPv4Interface(gateway_cidr)
        created = not netns.is_netns(ns_path)
        netns.create_netns(ns_path)
    try:
        _ensure_devices(k, ns_path, vni, gateway_cidr, mtu, local_ip, port)
    except BaseException:
        if created:
            try:
                remove_overlay(k, ns_path)
            except DataplaneError:
                pass  # the original error matters more
        raise


def remove_overlay(k: Netlink, ns_path: str) -> None:
    """Delete the network namespace and its devices; no error if it does not exist."""
    if netns.is_netns(ns_path):
        ipr = k.socket(ns_path)
        with failing(f"cannot delete the devices of network namespace {ns_path}"):
            # Namespace teardown is asynchronous; deleting the devices now releases the
            # VNI at once (so it can be reused right away) and unplugs the containers.
            vxlan = get_link(ipr, VXLAN)
            if vxlan is not None:
                ipr.link("del", index=vxlan["index"])
            for link in ipr.link("dump"):
                if link.get("ifname") != "lo":
                    ignore_missing(ipr.link, "del", index=link["index"])  # gone with a peer
    k.forget(ns_path)
    with failing(f"cannot delete network namespace {ns_path}"):
        netns.delete_netns(ns_path)


def vxlan_info(k: Netlink, ns_path: str) -> dict[str, Any]:
    """vni, port, local, learning, proxy, l2miss, l3miss, mtu, master, up of vxlan0."""
    ipr = k.socket(ns_path)
    with failing(f"cannot read {VXLAN} in network namespace {ns_path}"):
        link = _vxlan_link(ipr, ns_path)
        master = link.get("master")
        info = _vxlan_config(link)
        info.update(mtu=link.get("mtu"), up=bool(link["flags"] & 1),
                    master=ipr.link("get", index=master)[0].get("ifname") if master else None)
        return info


def _vxlan_config(msg: Any) -> dict[str, Any]:
    data = ("linkinfo", "data")
    return {
        "vni": attr(msg, *data, "vxlan_id"),
        "port": attr(msg, *data, "vxlan_port"),
        "local": attr(msg, *data, "vxlan_local"),
        "learning": bool(attr(msg, *data, "vxlan_learning")),
        "proxy": bool(attr(msg, *data, "vxlan_proxy")),
        "l2miss": bool(attr(msg, *data, "vxlan_l2miss")),
        "l3miss": bool(attr(msg, *data, "vxlan_l3miss")),
    }


def _ensure_devices(k: Netlink, ns_path: str, vni: int, gateway_cidr: str, mtu: int,
                    local_ip: str, port: int) -> None:
    ipr = k.socket(ns_path)
    want = {"vni": vni, "port": port, "local": local_ip, "learning": False, "proxy": True,
            "l2miss": False, "l3miss": False}
    with failing(f"cannot set up {VXLAN} (vni {vni}, port {port}, local {local_ip}) "
                 f"in network namespace {ns_path}"):
        ipaddress.IPv4Interface(gateway_cidr)
        # The bridge of an earlier layout (veth + br0) holds vxlan0 as a port: a device with
        # a bridge over it takes no macvlan.
        ignore_missing(ipr.link, "del", ifname=BRIDGE)
        link = get_link(ipr, VXLAN)
        if link is not None and _vxlan_config(link) != want:
            ipr.link("del", index=link["index"])
            link = None
        if link is None:
            _create_vxlan(k, ns_path, vni, local_ip, port, mtu)
            link = ipr.link("get", ifname=VXLAN)[0]
        ipr.link("set", index=link["index"], mtu=mtu, state="up")
    k.remember(ns_path, VXLAN, int(link["index"]))
    ensure_gateway(k, ns_path, GATEWAY, int(link["index"]), gateway_cidr, mtu)


def _create_vxlan(k: Netlink, ns_path: str, vni: int, local_ip: str, port: int,
                  mtu: int) -> None:
    """Create vxlan0 in the host namespace under a temporary name and move it to ns_path.

    Its UDP socket belongs to the namespace it was created in, which is what puts every
    network's traffic on the host's underlay port.
    """
    home = k.socket(None)
    tmp = _TMP_PREFIX + secrets.token_hex(5)
    spec = {"kind": "vxlan", "vxlan_id": vni, "vxlan_local": local_ip, "vxlan_port": port,
            "vxlan_learning": 0, "vxlan_proxy": 1, "vxlan_l2miss": 0, "vxlan_l3miss": 0,
            "mtu": mtu}
    try:
        home.link("add", ifname=tmp, **spec)
    except NetlinkError as exc:
        # A crash between create and move leaves a temporary device holding the VNI.
        if exc.code != errno.EEXIST or not _drop_stale_vxlan(home, vni, port):
            if exc.code == errno.EEXIST:
                raise DataplaneError(f"VNI {vni} on UDP port {port} is already used by "
                                     f"another vxlan device of the {k.label(None)}",
                                     exc.code) from exc
            raise
        home.link("add", ifname=tmp, **spec)
    index = home.link("get", ifname=tmp)[0]["index"]
    try:
        with ns_fd(ns_path) as fd:
            # One message moves and renames, so no name clash is possible on either side.
            home.link("set", index=index, net_ns_fd=fd, ifname=VXLAN)
    except BaseException:
        home.link("del", index=index)
        raise


def _drop_stale_vxlan(home: IPRoute, vni: int, port: int) -> bool:
    dropped = False
    for link in home.link("dump"):
        name = link.get("ifname") or ""
        if (name.startswith(_TMP_PREFIX) and attr(link, "linkinfo", "kind") == "vxlan"
                and attr(link, "linkinfo", "data", "vxlan_id") == vni
                and attr(link, "linkinfo", "data", "vxlan_port") == port):
            home.link("del", index=link["index"])
            dropped = True
    return dropped


# -- remote peers: static FDB (mac -> vtep) + permanent neighbour (ip -> mac) on vxlan0 --------

def peers(k: Netlink, ns_path: str) -> set[tuple[str, str, str]]:
    """(mac, ip, vtep_ip) of the static remote endpoints programmed on vxlan0."""
    ipr = k.socket(ns_path)
    with failing(f"cannot read the peers of network namespace {ns_path}"):
        vx = int(_vxlan_link(ipr, ns_path)["index"])
        raw = k.rtnl(ns_path)     # read as tuples, not pyroute2 objects: see rtnl.py why
        # The bridge's own entries for the port are NTF_MASTER and have no dst.
        vteps = {mac: dst for _, state, flags, mac, dst in rtnl.fdb_dump(raw, vx)
                 if flags & NTF_SELF and state & NUD_PERMANENT and dst}
        return {(mac, ip, vteps[mac]) for _, state, _, mac, ip in rtnl.neighbour_dump(raw, vx)
                if state & NUD_PERMANENT and mac in vteps}


def add_peer(k: Netlink, ns_path: str, mac: str, ip: str, vtep_ip: str) -> None:
    """Static FDB (mac -> vtep) and neighbour (ip -> mac) entries on vxlan0 (replace), to
    the remembered ifindex of vxlan0 (asked again if stale)."""
    with failing(f"cannot add peer {ip} {mac} via {vtep_ip} in {ns_path}"):
        for refresh in (False, True):
            vx = _vxlan_index(k, ns_path, refresh)
            replies = k.rtnl(ns_path).requests(_peer_requests(vx, mac, ip, vtep_ip))
            errors = [r for r in replies if r.error]
            if not errors:
                return
            if errors[0].error != errno.ENODEV or refresh:
                errors[0].check("the kernel refused it")


_PEERS_PER_SEND = 32     # two requests each; their acknowledgements must fit the socket buffer


def add_peers(k: Netlink, ns_path: str, peers: list[tuple[str, str, str]]) -> None:
    """add_peer for many (mac, ip, vtep) at once, a few dozen peers per send: a host joining
    a network of a thousand containers programs them in milliseconds. Anything refused is
    done again one at a time by add_peer, which says what is wrong."""
    vx = _vxlan_index(k, ns_path)
    for start in range(0, len(peers), _PEERS_PER_SEND):
        chunk = peers[start:start + _PEERS_PER_SEND]
        msgs = [m for peer in chunk for m in _peer_requests(vx, *peer)]
        try:
            replies = k.rtnl(ns_path).requests(msgs)
        except OSError:
            replies = [rtnl.Reply(errno.EIO)] * len(msgs)
        for i, peer in enumerate(chunk):
            if replies[2 * i].error or replies[2 * i + 1].error:
                add_peer(k, ns_path, *peer)


def _peer_requests(vx: int, mac: str, ip: str, vtep: str) -> list[tuple[int, int, bytes]]:
    replace = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    return [(rtnl.RTM_NEWNEIGH, replace, rtnl.fdb_entry(vx, mac.lower(), vtep)),
            (rtnl.RTM_NEWNEIGH, replace, rtnl.neighbour(vx, ip, mac.lower()))]


def _vxlan_index(k: Netlink, ns_path: str, refresh: bool = False) -> int:
    vx = k.index(ns_path, VXLAN, refresh)
    if vx is None:
        raise DataplaneError(f"no {VXLAN} in network namespace {ns_path}", errno.ENODEV)
    return vx


def remove_peer(k: Netlink, ns_path: str, mac: str, ip: str, vtep_ip: str) -> None:
    """Remove the entries of that exact peer; no error if they are gone.

    Entries that now describe a newer endpoint stay: the MAC re-pointed to another VTEP
    (the endpoint moved) or the IP mapped to another MAC (the address was reused).
    """
    mac = mac.lower()
    if not k.knows(ns_path) and not netns.is_netns(ns_path):
        return
    ipr = k.socket(ns_path)
    with failing(f"cannot remove peer {ip} {mac} via {vtep_ip} in {ns_path}"):
        link = get_link(ipr, VXLAN)
        if link is None:
            return
        vx = int(link["index"])
        dst = _fdb_dst(ipr, vx, mac)
        if dst is not None and dst != vtep_ip:
            return  # the endpoint moved to another host since: its entries are current
        if dst is not None:
            ignore_missing(ipr.fdb, "del", ifindex=vx, lladdr=mac, dst=vtep_ip)
        if _neigh_mac(ipr, vx, ip) == mac:
            ignore_missing(ipr.neigh, "del", ifindex=vx, dst=ip)


def _vxlan_link(ipr: IPRoute, ns_path: str) -> Any:
    link = get_link(ipr, VXLAN)
    if link is None:
        raise DataplaneError(f"no {VXLAN} in network namespace {ns_path}", errno.ENODEV)
    return link


def _fdb_dst(ipr: IPRoute, vx: int, mac: str) -> str | None:
    """The VTEP a MAC points to on vxlan device `vx`, or None."""
    # Only the vxlan's own entries have a dst (the bridge learns remote MACs on its port too).
    entry = single(ipr.fdb, lambda: (m for m in ipr.fdb("dump", ifindex=vx) if m.get("dst")),
                   ifindex=vx, lladdr=mac, flags=NTF_SELF)
    return None if entry is None else entry.get("dst")


def _neigh_mac(ipr: IPRoute, vx: int, ip: str) -> str | None:
    """The MAC an IPv4 address resolves to on vxlan device `vx`, or None."""
    entry = single(ipr.neigh, lambda: ipr.neigh("dump", ifindex=vx, family=AF_INET),
                   ifindex=vx, dst=ip)
    return None if entry is None else entry.get("lladdr")
