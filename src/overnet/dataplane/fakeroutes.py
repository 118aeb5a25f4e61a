"""The fake data plane's host subnets (flannel backends), in memory: what routes.py programs.

A mixin of FakeDataplane (fake.py); the state is FakeDataplane's host namespace.
"""

from __future__ import annotations

import errno
import ipaddress

from overnet.dataplane.fakestate import (
    FakeNamespace,
    FakeRoute,
    NsKey,
    bad_input,
    check_mtu,
    holder,
    networks,
    operation,
)
from overnet.dataplane.model import DataplaneError, GwRoute, VxlanPeer, check_ifname, check_mac
from overnet.dataplane.routes import RTPROT_OVERNET

_DEFAULT = "0.0.0.0/0"


class FakeHostSubnets:
    namespaces: dict[NsKey, FakeNamespace]

    def _delete(self, key: NsKey, name: str) -> None:
        raise NotImplementedError

    def _vxlan_in_use(self, vni: int, port: int) -> bool:
        raise NotImplementedError

    @property
    def _host(self) -> FakeNamespace:
        return self.namespaces[None]

    @operation
    def underlay(self, address: str) -> tuple[int, list[str]]:
        link = holder(self._host, address)
        if link is None:
            raise DataplaneError(f"no device holds address {address}", errno.EADDRNOTAVAIL)
        return link.index, [str(n) for n in networks(link)]

    @operation
    def enable_forwarding(self) -> bool:
        was_off = not self._host.forwarding
        self._host.forwarding = True
        return was_off

    @operation
    def ensure_vxlan(self, name: str, vni: int, local: str, port: int, mtu: int, mac: str,
                     address: str) -> str:
        what = f"cannot set up {name} (vni {vni}, port {port}, local {local}, mtu {mtu})"
        check_ifname(name)
        with bad_input(what):
            ipaddress.IPv4Address(local)
            ipaddress.IPv4Address(address)
            check_mac(mac)
        check_mtu(mtu, what)
        want = {"vni": vni, "port": port, "local": local, "learning": False}
        link = self._host.links.get(name)
        if link is not None and (link.vxlan is None or
                                 {k: link.vxlan[k] for k in want} != want):
            self._delete(None, name)
            link = None
        if link is None:
            if self._vxlan_in_use(vni, port):
                raise DataplaneError(f"{what}: File exists (errno 17)", errno.EEXIST)
            link = self._host.add(name, "vxlan", mtu, vxlan={
                **want, "proxy": False, "l2miss": False, "l3miss": False})
        link.addresses = [f"{address}/32"]
        link.mac, link.mtu, link.up = mac.lower(), mtu, True
        return link.mac

    @operation
    def remove_link(self, name: str) -> None:
        self._delete(None, name)

    @operation
    def vxlan_peers(self, name: str) -> tuple[set[str], dict[str, str], dict[str, str]]:
        return self._vxlan_peers(name)

    def _vxlan_peers(self, name: str) -> tuple[set[str], dict[str, str], dict[str, str]]:
        link = self._host.links.get(name)
        if link is None:
            return set(), {}, {}
        routes = {r.dst for r in self._host.routes.values() if r.dev == name and r.dst != _DEFAULT}
        return routes, dict(link.neigh), dict(link.fdb)

    @operation
    def sync_vxlan(self, name: str, peers: set[VxlanPeer]) -> tuple[int, int]:
        routes, neigh, fdb = self._vxlan_peers(name)
        link = self._host.links.get(name)
        if link is None:
            raise DataplaneError(f"no device {name}", errno.ENODEV)
        want_routes = {p.subnet for p in peers}
        want_neigh = {str(ipaddress.IPv4Network(p.subnet).network_address): p.vtep_mac
                      for p in peers}
        want_fdb = {p.vtep_mac: p.public_ip for p in peers}
        stale = ([s for s in routes - want_routes]
                 + [ip for ip, mac in neigh.items() if want_neigh.get(ip) != mac]
                 + [mac for mac, dst in fdb.items() if want_fdb.get(mac) != dst])
        for subnet in routes - want_routes:
            del self._host.routes[subnet]
        link.neigh = {ip: mac for ip, mac in neigh.items() if want_neigh.get(ip) == mac}
        link.fdb = {mac: dst for mac, dst in fdb.items() if want_fdb.get(mac) == dst}
        added = (sum(neigh.get(ip) != mac for ip, mac in want_neigh.items())
                 + sum(fdb.get(mac) != dst for mac, dst in want_fdb.items())
                 + len(want_routes - routes))
        link.neigh.update(want_neigh)
        link.fdb.update(want_fdb)
        for subnet in want_routes - routes:
            gw = str(ipaddress.IPv4Network(subnet).network_address)
            self._host.routes[subnet] = FakeRoute(subnet, name, gw)
        return added, len(stale)

    @operation
    def gw_routes(self) -> set[GwRoute]:
        return self._gw_routes()

    def _gw_routes(self) -> set[GwRoute]:
        return {GwRoute(r.dst, r.gateway) for r in self._host.routes.values()
                if r.proto == RTPROT_OVERNET and r.gateway}

    @operation
    def sync_gw(self, oif: int, want: set[GwRoute]) -> tuple[int, int]:
        have = self._gw_routes()
        dev = self._host.by_index(oif)
        if dev is None and want - have:
            raise DataplaneError("cannot program host-gw routes: No such device (errno 19)",
                                 errno.ENODEV)
        for r in have - want:
            self._host.routes.pop(r.subnet, None)
        for r in want - have:
            assert dev is not None
            if not any(ipaddress.IPv4Address(r.gateway) in n for n in networks(dev)):
                raise DataplaneError("cannot program host-gw routes: Nexthop has invalid "
                                     f"gateway {r.gateway}", errno.ENETUNREACH)
            self._host.routes[r.subnet] = FakeRoute(r.subnet, dev.name, r.gateway,
                                                    RTPROT_OVERNET)
        return len(want - have), len(have - want)
