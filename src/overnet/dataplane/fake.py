"""An in-memory Dataplane for unit tests of the agent and drivers: no root, no kernel.

It keeps what the kernel would hold (namespaces, devices with mtu/mac/addresses/master/up,
veth pairs, macvlans, vxlan FDB and neighbour entries, routes) and answers like
NetlinkDataplane does: tests/integration/test_dataplane_contract.py runs the same scenarios
against both.

Test handles: `namespaces` (path or None -> FakeNamespace), `link(ns, name)`, `add_device`,
`drop_link`, `drop_netns`, `remove_fdb`, `remove_neigh` (corrupt state behind the agent's
back), `calls` (every call made), and `fail_next(method, exc, after=False, times=1)`: the next
call(s) of that method raise `exc`, before doing anything or (after=True) after doing it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from typing import Any

from overnet.dataplane.api import Dataplane
from overnet.dataplane.fakeroutes import FakeHostSubnets
from overnet.dataplane.fakestate import (
    Call,
    FakeLink,
    FakeNamespace,
    FakeRoute,
    Fault,
    NsKey,
    bad_input,
    check_mtu,
    holder,
    networks,
    ns_key,
    operation,
)
from overnet.dataplane.model import (
    BRIDGE,
    GATEWAY,
    VXLAN,
    VXLAN_PORT,
    DataplaneError,
    LinkInfo,
    attach_input,
    check_ifname,
    check_mac,
)

__all__ = ["Call", "FakeDataplane", "FakeLink", "FakeNamespace", "FakeRoute"]


class FakeDataplane(FakeHostSubnets, Dataplane):
    """In-memory data plane. `underlay` ("192.168.1.10/24") gives the host a device
    `underlay_dev` holding it, with `underlay_mtu`, as underlay_mtu()/underlay() need."""

    def __init__(self, underlay: str | None = None, underlay_mtu: int = 1500,
                 underlay_dev: str = "eth0") -> None:
        self.namespaces: dict[NsKey, FakeNamespace] = {None: FakeNamespace.fresh(None)}
        self.private_dirs: set[str] = set()
        self.calls: list[Call] = []
        self.faults: dict[str, Fault] = {}
        self.closed = False
        if underlay is not None:
            self.add_device(None, underlay_dev, mtu=underlay_mtu, addresses=[underlay])

    # -- test handles ---------------------------------------------------------------------------

    def fail_next(self, method: str, exc: BaseException | None = None, after: bool = False,
                  times: int = 1) -> None:
        """Make the next `times` calls of `method` raise `exc` (default: a DataplaneError)."""
        if not getattr(getattr(type(self), method, None), "is_operation", False):
            raise ValueError(f"{method!r} is not a data plane operation")
        self.faults[method] = Fault(exc or DataplaneError(f"injected failure in {method}"),
                                    after, times)

    def count(self, method: str) -> int:
        """How many times `method` was called."""
        return sum(1 for c in self.calls if c.method == method)

    def link(self, ns_path: str | None, name: str) -> FakeLink:
        """The device record itself (KeyError if absent): read it, or change it."""
        return self.namespaces[ns_key(ns_path)].links[name]

    def add_device(self, ns_path: str | None, name: str, kind: str | None = None,
                   mtu: int = 1500, addresses: list[str] | None = None,
                   up: bool = True) -> FakeLink:
        """A device made by someone else (an underlay NIC, a clashing name)."""
        return self._ns(ns_path).add(name, kind, mtu, up=up, addresses=list(addresses or []))

    def drop_link(self, ns_path: str | None, name: str) -> None:
        """Delete a device behind the agent's back (a veth's other end goes too)."""
        self._delete(ns_key(ns_path), name)

    def drop_netns(self, path: str) -> None:
        """A namespace vanishes behind the agent's back (its devices and their peers go)."""
        key = ns_key(path)
        ns = self.namespaces.pop(key, None)
        for link in list(ns.links.values()) if ns else []:
            if link.peer is not None:
                self._delete(*link.peer)
            if link.kind == "vxlan":
                self._drop_uppers((key, link.name))

    def remove_fdb(self, ns_path: str | None, mac: str, device: str = VXLAN) -> None:
        self.link(ns_path, device).fdb.pop(mac.lower(), None)

    def remove_neigh(self, ns_path: str | None, ip: str, device: str = VXLAN) -> None:
        self.link(ns_path, device).neigh.pop(ip, None)

    # -- namespaces -----------------------------------------------------------------------------

    @operation
    def create_netns(self, path: str) -> None:
        self.namespaces.setdefault(ns_key(path), FakeNamespace.fresh(ns_key(path)))

    @operation
    def delete_netns(self, path: str) -> None:
        self.drop_netns(path)

    @operation
    def list_netns(self, directory: str) -> list[str]:
        d = os.path.abspath(directory)
        return sorted(os.path.basename(k) for k in self.namespaces
                      if k is not None and os.path.dirname(k) == d)

    @operation
    def is_netns(self, path: str) -> bool:
        return ns_key(path) in self.namespaces

    @operation
    def ensure_private_dir(self, directory: str) -> None:
        self.private_dirs.add(os.path.abspath(directory))

    # -- host and bridges -----------------------------------------------------------------------

    @operation
    def underlay_mtu(self, address: str) -> int:
        link = holder(self.namespaces[None], address)
        if link is None:
            raise DataplaneError(f"no device holds address {address} in the host namespace",
                                 errno.EADDRNOTAVAIL)
        return link.mtu

    @operation
    def ensure_bridge(self, name: str, gateway_cidr: str, mtu: int) -> None:
        self._ensure_bridge(None, name, gateway_cidr, mtu)

    @operation
    def remove_bridge(self, name: str) -> None:
        self._delete(None, name)

    # -- overlay networks -----------------------------------------------------------------------

    @operation
    def ensure_overlay(self, ns_path: str, vni: int, gateway_cidr: str, mtu: int,
                       local_ip: str, port: int = VXLAN_PORT) -> None:
        with bad_input(f"cannot set up network namespace {ns_path}"):
            ipaddress.IPv4Address(local_ip)
            ipaddress.IPv4Interface(gateway_cidr)
        key = ns_key(ns_path)
        created = key not in self.namespaces
        self.namespaces.setdefault(key, FakeNamespace.fresh(key))
        try:
            self._delete(key, BRIDGE)      # an earlier layout's bridge over vxlan0
            self._ensure_vxlan0(ns_path, vni, mtu, local_ip, port)
            self._ensure_gateway(ns_path, gateway_cidr, mtu)
        except BaseException:
            if created:
                self.drop_netns(ns_path)
            raise

    def _ensure_vxlan0(self, ns_path: str, vni: int, mtu: int, local_ip: str,
                       port: int) -> None:
        ns = self.namespaces[ns_key(ns_path)]
        what = (f"cannot set up {VXLAN} (vni {vni}, port {port}, local {local_ip}) "
                f"in network namespace {ns_path}")
        want = {"vni": vni, "port": port, "local": local_ip, "learning": False, "proxy": True,
                "l2miss": False, "l3miss": False}
        link = ns.links.get(VXLAN)
        if link is not None and link.vxlan != want:
            self._delete(ns.path, VXLAN)
            link = None
        if link is None:
            if self._vxlan_in_use(vni, port):
                raise DataplaneError(f"VNI {vni} on UDP port {port} is already used by another "
                                     "vxlan device of the host namespace", errno.EEXIST)
            check_mtu(mtu, what)
            link = ns.add(VXLAN, "vxlan", mtu, vxlan=want)
        check_mtu(mtu, what)
        link.mtu, link.up = mtu, True

    def _ensure_gateway(self, ns_path: str, gateway_cidr: str, mtu: int) -> None:
        ns = self.namespaces[ns_key(ns_path)]
        with bad_input(f"cannot set up {GATEWAY} ({gateway_cidr}) in namespace {ns_path}"):
            gw = ipaddress.IPv4Interface(gateway_cidr)
        link = ns.links.get(GATEWAY)
        if link is not None and (link.kind != "macvlan" or link.lower != (ns.path, VXLAN)):
            self._delete(ns.path, GATEWAY)
            link = None
        if link is None:
            link = ns.add(GATEWAY, "macvlan", mtu, lower=(ns.path, VXLAN))
        link.addresses = [f"{gw.ip}/{gw.network.prefixlen}"]
        link.mtu, link.up = mtu, True

    @operation
    def remove_overlay(self, ns_path: str) -> None:
        self.drop_netns(ns_path)

    @operation
    def vxlan_info(self, ns_path: str) -> dict[str, Any]:
        link = self._vxlan0(ns_path)
        assert link.vxlan is not None
        return {**link.vxlan, "mtu": link.mtu, "master": link.master, "up": link.up}

    def _vxlan0(self, ns_path: str) -> FakeLink:
        link = self._ns(ns_path).links.get(VXLAN)
        if link is None or link.vxlan is None:
            raise DataplaneError(f"no {VXLAN} in network namespace {ns_path}", errno.ENODEV)
        return link

    # -- containers -----------------------------------------------------------------------------

    @operation
    def attach(self, net_ns: str | None, container_ns: str, host_ifname: str, ip_cidr: str,
               mac: str, mtu: int, gateway: str | None = None, bridge: str = BRIDGE,
               ifname: str = "eth0") -> None:
        check_ifname(host_ifname)
        where = "host namespace" if net_ns is None else f"namespace {net_ns}"
        what, addr = attach_input(container_ns, ifname, ip_cidr, mac, mtu,
                                  f"via {host_ifname} to {bridge} in {where}")
        net, cns = self._ns(net_ns, what), self._ns(container_ns, what)
        if bridge not in net.links:
            raise DataplaneError(f"{what}: no bridge {bridge}", errno.ENODEV)
        fresh = host_ifname not in net.links and ifname not in cns.links
        if fresh:
            self._add_veth(net, cns, host_ifname, ifname, mac, mtu, bridge, what)
        else:
            self._adopt_veth(net, cns, host_ifname, ifname, mac, mtu, bridge, what)
        try:
            self._configure(cns, ifname, addr, gateway, what)
        except BaseException:
            if fresh:  # as the real one: no half-made pair left behind
                self._delete(net.path, host_ifname)
            raise

    def _add_veth(self, net: FakeNamespace, cns: FakeNamespace, host_ifname: str,
                  ifname: str, mac: str, mtu: int, bridge: str, what: str) -> None:
        check_mtu(mtu, what)
        net.add(host_ifname, "veth", mtu, up=True, master=bridge, peer=(cns.path, ifname))
        cns.add(ifname, "veth", mtu, mac, peer=(net.path, host_ifname))

    def _adopt_veth(self, net: FakeNamespace, cns: FakeNamespace, host_ifname: str,
                    ifname: str, mac: str, mtu: int, bridge: str, what: str) -> None:
        host, peer = net.links.get(host_ifname), cns.links.get(ifname)
        paired = (host is not None and peer is not None and host.peer == (cns.path, ifname)
                  and peer.peer == (net.path, host_ifname))
        if host is not None and not paired:
            self._delete(net.path, host_ifname)  # a stale host end: start over
            host, peer = None, cns.links.get(ifname)
        if host is None:
            if peer is not None:
                raise DataplaneError(f"{what}: the container already has a device named "
                                     f"{ifname}", errno.EEXIST)
            self._add_veth(net, cns, host_ifname, ifname, mac, mtu, bridge, what)
            return
        assert peer is not None
        check_mtu(mtu, what)
        host.master, host.mtu, host.up = bridge, mtu, True
        peer.mac, peer.mtu = mac.lower(), mtu

    def _configure(self, cns: FakeNamespace, ifname: str, addr: ipaddress.IPv4Interface,
                   gateway: str | None, what: str) -> None:
        link = cns.links[ifname]
        link.addresses = [f"{addr.ip}/{addr.network.prefixlen}"]
        link.up = True
        cns.links["lo"].up = True
        if gateway is not None:
            with bad_input(what):
                gw = ipaddress.IPv4Address(gateway)
            if not any(gw in net for net in networks(link)):
                raise DataplaneError(f"{what}: Nexthop has invalid gateway", errno.ENETUNREACH)
            cns.routes["0.0.0.0/0"] = FakeRoute("0.0.0.0/0", ifname, gateway)

    @operation
    def attach_macvlan(self, net_ns: str, container_ns: str, ip_cidr: str, mac: str, mtu: int,
                       gateway: str | None = None, ifname: str = "eth0") -> None:
        what, addr = attach_input(container_ns, ifname, ip_cidr, mac, mtu,
                                  f"to {VXLAN} in namespace {net_ns}")
        net, cns = self._ns(net_ns, what), self._ns(container_ns, what)
        link = cns.links.get(ifname)
        if link is not None and link.kind == "veth" and link.mac == mac.lower():
            self._delete(cns.path, ifname)     # the earlier layout's veth: replaced
            link = None
        made = link is None
        if made:
            self._add_macvlan(net, cns, ifname, mac, mtu, what)
        elif not self._ours(link, mac):
            raise DataplaneError(f"{what}: the container already has a device named {ifname}",
                                 errno.EEXIST)
        else:
            check_mtu(mtu, what)
            link.mtu = mtu
        try:
            self._configure(cns, ifname, addr, gateway, what)
        except BaseException:
            if made:  # as the real one: no half-made device left behind
                self._delete(cns.path, ifname)
            raise

    def _add_macvlan(self, net: FakeNamespace, into: FakeNamespace, ifname: str, mac: str,
                     mtu: int, what: str) -> FakeLink:
        if VXLAN not in net.links:
            raise DataplaneError(f"{what}: no {VXLAN}", errno.ENODEV)
        check_mtu(mtu, what)
        return into.add(ifname, "macvlan", mtu, mac, lower=(net.path, VXLAN))

    @staticmethod
    def _ours(link: FakeLink, mac: str) -> bool:
        return link.kind == "macvlan" and link.mac == mac.lower()

    @operation
    def attach_handover(self, net_ns: str, peer_ifname: str, mac: str, mtu: int) -> None:
        check_ifname(peer_ifname)
        what = (f"cannot make {peer_ifname} ({mac} mtu {mtu}) for hand-over on {VXLAN} in "
                f"namespace {net_ns}")
        with bad_input(what):
            check_mac(mac)
        net, home = self._ns(net_ns, what), self._ns(None, what)
        link = home.links.get(peer_ifname)
        if link is not None:
            if self._ours(link, mac):
                return
            raise DataplaneError(f"{what}: the host namespace already has a device named "
                                 f"{peer_ifname}", errno.EEXIST)
        self._add_macvlan(net, home, peer_ifname, mac, mtu, what)

    @operation
    def detach_macvlan(self, ns_path: str | None, ifname: str, mac: str) -> None:
        ns = self.namespaces.get(ns_key(ns_path))
        link = ns.links.get(ifname) if ns else None
        if link is not None and self._ours(link, mac):
            self._delete(ns_key(ns_path), ifname)

    def move_link(self, src: str | None, name: str, dst: str | None, new_name: str) -> None:
        """Test handle: what a runtime does with a handed-over device (move and rename)."""
        link = self.namespaces[ns_key(src)].links.pop(name)
        link.name = new_name
        self.namespaces[ns_key(dst)].links[new_name] = link
        if link.peer is not None:
            self.namespaces[link.peer[0]].links[link.peer[1]].peer = (ns_key(dst), new_name)

    @operation
    def detach(self, net_ns: str | None, host_ifname: str) -> None:
        self._delete(ns_key(net_ns), host_ifname)

    @operation
    def link_info(self, ns_path: str | None, ifname: str) -> LinkInfo | None:
        check_ifname(ifname)
        ns = self._ns(ns_path)
        link = ns.links.get(ifname)
        return None if link is None else self._info(ns, link)

    @operation
    def links(self, ns_path: str | None) -> list[LinkInfo]:
        ns = self._ns(ns_path)
        return sorted((self._info(ns, li) for li in ns.links.values()), key=lambda i: i.index)

    # -- remote peers ---------------------------------------------------------------------------

    @operation
    def peers(self, ns_path: str) -> set[tuple[str, str, str]]:
        vx = self._vxlan0(ns_path)
        return {(mac, ip, vx.fdb[mac]) for ip, mac in vx.neigh.items() if mac in vx.fdb}

    @operation
    def add_peer(self, ns_path: str, mac: str, ip: str, vtep: str) -> None:
        with bad_input(f"cannot add peer {ip} {mac} via {vtep} in {ns_path}"):
            check_mac(mac)
            ipaddress.IPv4Address(ip)
            ipaddress.IPv4Address(vtep)
        vx = self._vxlan0(ns_path)
        vx.fdb[mac.lower()] = vtep
        vx.neigh[ip] = mac.lower()

    @operation
    def remove_peer(self, ns_path: str, mac: str, ip: str, vtep: str) -> None:
        mac = mac.lower()
        ns = self.namespaces.get(ns_key(ns_path))
        vx = ns.links.get(VXLAN) if ns else None
        if vx is None:
            return
        dst = vx.fdb.get(mac)
        if dst is not None and dst != vtep:
            return  # the endpoint moved to another host since: its entries are current
        vx.fdb.pop(mac, None)
        if vx.neigh.get(ip) == mac:
            del vx.neigh[ip]

    @operation
    def close(self) -> None:
        self.closed = True

    # -- internals ------------------------------------------------------------------------------

    def _ns(self, path: str | None, what: str | None = None) -> FakeNamespace:
        ns = self.namespaces.get(ns_key(path))
        if ns is None:
            raise DataplaneError(f"{what + ': ' if what else ''}cannot open namespace {path}: "
                                 "no such network namespace", errno.ENOENT)
        return ns

    def _delete(self, key: NsKey, name: str) -> None:
        ns = self.namespaces.get(key)
        link = ns.links.pop(name, None) if ns else None
        if link is None or ns is None:
            return
        for other in ns.links.values():
            if other.master == name:
                other.master = None
        for dst, route in list(ns.routes.items()):
            if route.dev == name:
                del ns.routes[dst]
        if link.peer is not None:
            self._delete(*link.peer)
        if link.kind == "vxlan":
            self._drop_uppers((key, name))

    def _drop_uppers(self, lower: tuple[NsKey, str]) -> None:
        """A vxlan device's macvlans go with it, wherever they are."""
        for ns in list(self.namespaces.values()):
            for upper in [li.name for li in ns.links.values() if li.lower == lower]:
                self._delete(ns.path, upper)

    def _info(self, ns: FakeNamespace, link: FakeLink) -> LinkInfo:
        peer = None
        if link.peer is not None:
            pns = self.namespaces.get(link.peer[0])
            plink = pns.links.get(link.peer[1]) if pns else None
            peer = plink.index if plink else None
        return ns.info(link, peer)

    def _vxlan_in_use(self, vni: int, port: int) -> bool:
        """Every vxlan device is created in the host namespace, so one VNI per port."""
        return any(li.vxlan is not None and li.vxlan["vni"] == vni
                   and li.vxlan["port"] == port
                   for ns in self.namespaces.values() for li in ns.links.values())

    def _ensure_bridge(self, path: str | None, name: str, gateway_cidr: str, mtu: int) -> None:
        check_ifname(name)
        ns = self._ns(path)
        where = "host namespace" if path is None else f"namespace {path}"
        what = f"cannot set up bridge {name} ({gateway_cidr}, mtu {mtu}) in {where}"
        with bad_input(what):
            gw = ipaddress.IPv4Interface(gateway_cidr)
        check_mtu(mtu, what)
        link = ns.links.get(name)
        if link is None:
            link = ns.add(name, "bridge", mtu)
        elif link.kind != "bridge":
            raise DataplaneError(f"{name} in {where} exists but is a "
                                 f"{link.kind or 'plain device'}, not a bridge", errno.EEXIST)
        link.addresses = [f"{gw.ip}/{gw.network.prefixlen}"]
        link.mtu, link.up = mtu, True

