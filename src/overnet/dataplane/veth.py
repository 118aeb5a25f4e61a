"""Plugging containers into a bridge with a veth pair, and unplugging them.

The host end lives in the bridge's namespace (the host's, for the local bridge driver: an
overlay network's containers are macvlans, macvlan.py) as a port of the bridge; the container
end is born inside the container's namespace, already named, addressed by MAC and sized, so
nothing is moved or renamed afterwards. configure_container and configure_fresh (a container
interface's address, `lo` and default route) serve macvlan.py too.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from overnet.crashpoints import crashpoint
from overnet.dataplane import netns, rtnl
from overnet.dataplane.model import (BRIDGE, LOOPBACK_INDEX, DataplaneError, attach_input,
                                     check_ifname)
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
    ignore_missing,
)


def attach(k: Netlink, net_ns: str | None, container_ns: str, host_ifname: str, ip_cidr: str,
           mac: str, mtu: int, gateway: str | None = None, bridge: str = BRIDGE,
           ifname: str = "eth0", fresh: bool = True) -> None:
    """Plug a container into `bridge` of `net_ns` (None: host namespace) with a veth pair.

    The container end is created directly inside the container namespace, named `ifname`,
    with `ip_cidr`, `mac` and `mtu`, up, plus `lo` up and (if given) a default route via
    `gateway`. Calling it again converges an existing pair instead of failing; a failed call
    leaves no pair behind that it created. `fresh=False`: the packed requests of a new pair
    were tried already (fastpath.py), go straight to converging.
    """
    check_ifname(host_ifname)
    what, addr = attach_input(container_ns, ifname, ip_cidr, mac, mtu,
                              f"via {host_ifname} to {bridge} in {k.label(net_ns)}")
    if fresh and _attach_fresh(k, net_ns, container_ns, host_ifname, ifname, addr,
                               mac.lower(), mtu, gateway, bridge):
        return
    ipr = k.socket(net_ns)
    with failing(what), k.transient(container_ns) as cipr:
        pair = _Pair(k, net_ns, ipr, cipr, host_ifname, ifname, mac.lower(), mtu, what)
        fresh, index = _with_bridge(k, net_ns, bridge, what, pair.plug)
        crashpoint("veth:created")      # mid-netlink: the pair exists, unconfigured
        try:
            configure_container(cipr, index, addr, gateway, fresh)
        except BaseException:
            if fresh:  # do not leave a half-configured pair behind
                try:
                    delete_link(k, net_ns, host_ifname)
                except DataplaneError:
                    pass  # the original error matters more
            raise


def _attach_fresh(k: Netlink, net_ns: str | None, container_ns: str, host_ifname: str,
                  ifname: str, addr: ipaddress.IPv4Interface, mac: str, mtu: int,
                  gateway: str | None, bridge: str) -> bool:
    """The common case, a new container, in two round trips of hand-packed requests (rtnl.py):
    make_fresh(), then configure_fresh(). False, with nothing left behind, when anything is
    not as expected (a name taken, a stale bridge index, a kernel that echoes nothing):
    attach() then converges the slow way and says what is wrong."""
    master = k.index(net_ns, bridge)
    if master is None:
        return False
    try:
        # the container's namespace opened once: for the new peer and for the socket there
        with k.fd(container_ns) as cfd, k.transient_rtnl(cfd) as craw:
            made, peer = make_fresh(k.rtnl(net_ns), master, cfd, host_ifname, ifname, mac, mtu)
            if not made:
                return False
            try:
                configure_fresh(craw, peer, addr, gateway,
                                f"configuring {ifname} in {container_ns}")
            except BaseException:   # the pair goes (as one) before the error is raised
                try:
                    delete_link(k, net_ns, host_ifname)
                except DataplaneError:
                    pass  # the original error matters more
                raise
    except OSError:
        return False
    return True


def make_fresh(sock: rtnl.Rtnl, master: int, cfd: int, host_ifname: str, ifname: str,
               mac: str, mtu: int) -> tuple[bool, int | None]:
    """One request on `sock` (of the bridge's namespace): the host end made a port of bridge
    `master`, up, its peer `ifname` born in the namespace open as `cfd`, addressed by MAC
    and sized. Returns (whether the pair was made, the peer's ifindex as the kernel echoed
    it: None if it did not)."""
    flags, body = rtnl.new_veth(host_ifname, mtu, master, ifname, mac, cfd)
    [made] = sock.requests([(rtnl.RTM_NEWLINK, flags, body)])
    if made.error:
        return False, None
    crashpoint("veth:created")      # mid-netlink: the pair exists, unconfigured
    return True, next((rtnl.u32(a[rtnl.IFLA_LINK]) for _, a in made.links or ()
                       if rtnl.IFLA_LINK in a), None)


def configure_fresh(craw: rtnl.Rtnl, peer: int | None, addr: ipaddress.IPv4Interface,
                    gateway: str | None, what: str) -> None:
    """Peer up, its address, `lo` up and the default route in one send on `craw` (a socket
    in the container's namespace); RtnlError if any is refused."""
    if peer is None:
        raise rtnl.RtnlError(errno.ENODATA, f"{what}: the kernel did not echo the new pair")
    msgs = [(rtnl.RTM_NEWLINK, 0, rtnl.ifinfo(peer, up=True)),
            (rtnl.RTM_NEWADDR, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
             rtnl.new_address(peer, str(addr.ip), addr.network.prefixlen)),
            (rtnl.RTM_NEWLINK, 0, rtnl.ifinfo(LOOPBACK_INDEX, up=True))]
    if gateway is not None:
        msgs.append((rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE,
                     rtnl.default_route(peer, gateway)))
    for reply in craw.requests(msgs):
        reply.check(what)


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


def configure_container(cipr: IPRoute, index: int, addr: ipaddress.IPv4Interface,
                         gateway: str | None, fresh: bool) -> None:
    if fresh:  # nothing to compare with: skip the address dump
        cipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
    else:
        ensure_addresses(cipr, index, addr)
    cipr.link("set", index=LOOPBACK_INDEX, state="up")
    if gateway is not None:
        cipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)


@dataclass
class _Pair:
    """The veth pair one attach call wants: `host_ifname` in `net_ns` (socket `ipr`),
    `ifname` in the container (socket `cipr`)."""

    k: Netlink
    net_ns: str | None
    ipr: IPRoute
    cipr: IPRoute
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
        """Create the pair from inside the container: `ifname` with its MAC, MTU and up, its
        peer born in the network's namespace (no move, no rename), then made a port of the
        bridge. Returns the container end's ifindex; None instead of EEXIST when `quiet`."""
        try:
            # The container end is the one created, so the kernel can echo it (NLM_F_ECHO):
            # its ifindex and, as IFLA_LINK, its peer's, without a 'get' of either. The echo
            # goes to the transient container socket, which is closed right after.
            with self.k.fd(self.net_ns) as fd, echoed(self.cipr):
                reply = self.cipr.link(
                    "add", ifname=self.ifname, kind="veth", address=self.mac, mtu=self.mtu,
                    state="up", peer={"ifname": self.host_ifname, "net_ns_fd": fd,
                                      "mtu": self.mtu})
        except NetlinkError as exc:
            if quiet and exc.code == errno.EEXIST:
                return None
            raise
        # Kernels before 6.3 echo nothing: ask.
        end = next((m for m in reply or () if m.get("ifname") == self.ifname), None) \
            or self.cipr.link("get", ifname=self.ifname)[0]
        try:
            self.ipr.link("set", index=end.get("link"), master=master, state="up")
        except BaseException:
            ignore_missing(self.cipr.link, "del", index=end["index"])  # the pair goes as one
            raise
        return int(end["index"])

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
