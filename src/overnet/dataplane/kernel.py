"""Kernel programming for overlay networks and local bridges, over netlink (pyroute2).

Layout per overlay network on a host (see the design brief):

    host namespace            network namespace (<state>/netns/<id>)    container namespace
    underlay ip, UDP 4789 <-- vxlan0 (created here, moved) --+
                                 br0 (gateway address) ------+-- vethXXXX <--> eth0 (ip, mac)

The vxlan device is created in the host namespace and then moved, so its UDP socket stays on the
underlay and every network shares the one port; remote endpoints are static FDB + neighbour
entries (learning off, ARP answered by the vxlan proxy).

One netlink socket is cached per namespace. pyroute2 sockets are bound to the namespace of the
thread that creates them and are kept per thread, so a `Kernel` is NOT thread-safe: it binds to
the first thread that uses it and refuses calls from any other thread.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from socket import AF_INET
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_NOARP, NUD_PERMANENT

from overnet.dataplane import netns

BRIDGE = "br0"
VXLAN = "vxlan0"
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
_TMP_PREFIX = "onvx"  # temporary name of a vxlan device before it moves into its namespace
_IFNAMSIZ = 15  # usable characters of a Linux interface name
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_LOOPBACK_INDEX = 1  # lo is ifindex 1 in every network namespace


class DataplaneError(Exception):
    """A kernel operation failed; the message names the device, namespace and value."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # errno when the kernel gave one


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        # pyroute2 puts the kernel's extended ack message (when any) in args[1].
        msg = exc.args[1] if len(exc.args) > 1 and exc.args[1] else os.strerror(exc.code)
        return f"{msg} (errno {exc.code})"
    return str(exc)


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """Turn pyroute2/OS errors into a DataplaneError that says what was being done."""
    try:
        yield
    except DataplaneError:
        raise
    except NetlinkError as exc:
        raise DataplaneError(f"{what}: {_reason(exc)}", exc.code) from exc
    except OSError as exc:
        raise DataplaneError(f"{what}: {_reason(exc)}", exc.errno) from exc
    except ValueError as exc:  # malformed address, MAC or CIDR given by the caller
        raise DataplaneError(f"{what}: {exc}", errno.EINVAL) from exc


def _check_ifname(name: str) -> None:
    if not name or len(name) > _IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise DataplaneError(f"invalid interface name {name!r}: 1 to {_IFNAMSIZ} characters, "
                             "no '/' or whitespace")


def _attr(msg: Any, *path: str) -> Any:
    return msg.get(path if len(path) > 1 else path[0])


def _vxlan_config(msg: Any) -> dict[str, Any]:
    data = ("linkinfo", "data")
    return {
        "vni": _attr(msg, *data, "vxlan_id"),
        "port": _attr(msg, *data, "vxlan_port"),
        "local": _attr(msg, *data, "vxlan_local"),
        "learning": bool(_attr(msg, *data, "vxlan_learning")),
        "proxy": bool(_attr(msg, *data, "vxlan_proxy")),
        "l2miss": bool(_attr(msg, *data, "vxlan_l2miss")),
        "l3miss": bool(_attr(msg, *data, "vxlan_l3miss")),
    }


def _paired(host: Any, peer: Any | None) -> bool:
    """True if two veth ends point at each other (IFLA_LINK is the peer's ifindex)."""
    return (peer is not None and _attr(peer, "linkinfo", "kind") == "veth"
            and host.get("link") == peer["index"] and peer.get("link") == host["index"])


def _ignore_missing(method: Any, *args: Any, **kwargs: Any) -> None:
    try:
        method(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV):
            raise


def _single(method: Any, fallback: Any, **kwargs: Any) -> Any | None:
    """One entry by key with a 'get' (kernel >= 5.8 for the FDB), else filtered from a dump."""
    try:
        return method("get", **kwargs)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENOENT:
            return None
        if exc.code not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    return next((m for m in fallback() if all(m.get(k) == v for k, v in kwargs.items()
                                               if k != "flags")), None)


def _fdb_dst(ipr: IPRoute, vx: int, mac: str) -> str | None:
    """The VTEP a MAC points to on vxlan device `vx`, or None."""
    # Only the vxlan's own entries have a dst (the bridge learns remote MACs on its port too).
    entry = _single(ipr.fdb, lambda: (m for m in ipr.fdb("dump", ifindex=vx) if m.get("dst")),
                    ifindex=vx, lladdr=mac, flags=NTF_SELF)
    return None if entry is None else entry.get("dst")


def _neigh_mac(ipr: IPRoute, vx: int, ip: str) -> str | None:
    """The MAC an IPv4 address resolves to on vxlan device `vx`, or None."""
    entry = _single(ipr.neigh, lambda: ipr.neigh("dump", ifindex=vx, family=AF_INET),
                    ifindex=vx, dst=ip)
    return None if entry is None else entry.get("lladdr")


@contextmanager
def _ns_fd(path: str) -> Iterator[int]:
    with _failing(f"cannot open namespace {path}"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


class Kernel:
    """Idempotent netlink operations for one agent; use from a single thread.

    Namespaces are named by path; `None` means the home (host) namespace: `host_ns` if given,
    otherwise the namespace of the thread that constructed the Kernel.
    """

    def __init__(self, host_ns: str | None = None) -> None:
        self._home_label = f"host namespace {host_ns}" if host_ns else "host namespace"
        with _failing(f"cannot open {self._home_label}"):
            # An fd, not a path: the home stays well defined even if no file names it.
            self._home_fd = os.open(host_ns or "/proc/thread-self/ns/net",
                                    os.O_RDONLY | os.O_CLOEXEC)
        self._sockets: dict[str | None, IPRoute] = {}
        self._owner: int | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every cached socket and the home namespace fd (idempotent)."""
        if self._sockets:
            self._check_thread()
        for ipr in self._sockets.values():
            ipr.close()
        self._sockets.clear()
        if self._home_fd >= 0:
            os.close(self._home_fd)
            self._home_fd = -1

    def forget(self, path: str | None) -> None:
        """Drop the cached socket of a namespace (call when the namespace is deleted)."""
        ipr = self._sockets.pop(self._key(path), None)
        if ipr is not None:
            self._check_thread()
            ipr.close()

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            # pyroute2 would silently open a new socket in *this* thread's namespace.
            raise DataplaneError("Kernel used from a second thread; it is bound to the thread "
                                 "that first used it")

    @staticmethod
    def _key(path: str | None) -> str | None:
        return None if path is None else os.path.abspath(path)

    def _label(self, path: str | None) -> str:
        return self._home_label if path is None else f"namespace {path}"

    def _ipr(self, path: str | None) -> IPRoute:
        """The cached socket of a namespace, opened by stepping this thread into it."""
        self._check_thread()
        key = self._key(path)
        ipr = self._sockets.get(key)
        if ipr is None:
            if self._home_fd < 0:
                raise DataplaneError("Kernel is closed")
            ipr = self._open(key)
            self._sockets[key] = ipr
        return ipr

    def _open(self, path: str | None) -> IPRoute:
        with _failing(f"cannot open a netlink socket in {self._label(path)}"):
            with netns.entered(self._home_fd if path is None else path):
                # The socket binds to the namespace current at creation; ext_ack gets the
                # kernel's own explanation of failures.
                return IPRoute(ext_ack=True)

    @contextmanager
    def _transient(self, path: str) -> Iterator[IPRoute]:
        """A socket in a namespace we do not keep one for (containers: one use each)."""
        self._check_thread()
        ipr = self._open(path)
        try:
            yield ipr
        finally:
            ipr.close()

    @staticmethod
    def _get(ipr: IPRoute, name: str) -> Any | None:
        """The link named `name`, or None (a 'get' is O(1), unlike a filtered dump)."""
        try:
            return ipr.link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise

    # -- host ---------------------------------------------------------------------------------

    def underlay_mtu(self, address: str) -> int:
        """MTU of the device holding IPv4 `address` in the host namespace."""
        ipr = self._ipr(None)
        with _failing(f"cannot read the MTU of the device holding {address}"):
            for msg in ipr.addr("dump", family=AF_INET):
                if msg.get("address") == address:
                    return int(ipr.link("get", index=msg["index"])[0].get("mtu"))
        raise DataplaneError(f"no device holds address {address} in the {self._home_label}")

    # -- bridges ------------------------------------------------------------------------------

    def _ensure_bridge(self, path: str | None, name: str, gateway_cidr: str, mtu: int) -> int:
        _check_ifname(name)
        where = self._label(path)
        ipr = self._ipr(path)
        with _failing(f"cannot set up bridge {name} ({gateway_cidr}, mtu {mtu}) in {where}"):
            gw = ipaddress.IPv4Interface(gateway_cidr)
            link = self._get(ipr, name)
            if link is None:
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
                link = ipr.link("get", ifname=name)[0]
            elif _attr(link, "linkinfo", "kind") != "bridge":
                raise DataplaneError(f"{name} in {where} exists but is a "
                                     f"{_attr(link, 'linkinfo', 'kind') or 'plain device'}, "
                                     "not a bridge", errno.EEXIST)
            idx = link["index"]
            self._ensure_addresses(ipr, idx, gw)
            # Setting the MTU explicitly also stops the bridge following its ports' MTUs.
            ipr.link("set", index=idx, mtu=mtu, state="up")
        return int(idx)

    @staticmethod
    def _ensure_addresses(ipr: IPRoute, index: int, want: ipaddress.IPv4Interface) -> None:
        """Make `want` the only IPv4 address of the device (the device is ours)."""
        have = {(m.get("address"), m["prefixlen"])
                for m in ipr.addr("dump", family=AF_INET) if m["index"] == index}
        target = (str(want.ip), want.network.prefixlen)
        for address, prefixlen in have - {target}:
            ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        if target not in have:
            ipr.addr("add", index=index, address=target[0], prefixlen=target[1])

    def ensure_bridge(self, name: str, gateway_cidr: str, mtu: int) -> None:
        """A bridge in the host namespace holding the gateway address (local bridge driver)."""
        self._ensure_bridge(None, name, gateway_cidr, mtu)

    def remove_bridge(self, name: str) -> None:
        """Delete a host-namespace bridge; no error if it does not exist."""
        self._delete_link(None, name)

    def _delete_link(self, path: str | None, name: str) -> None:
        ipr = self._ipr(path)
        with _failing(f"cannot delete {name} in {self._label(path)}"):
            link = self._get(ipr, name)
            if link is not None:
                try:
                    ipr.link("del", index=link["index"])
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:  # raced with its peer's deletion
                        raise

    # -- overlay ------------------------------------------------------------------------------

    def ensure_overlay(self, ns_path: str, vni: int, gateway_cidr: str, mtu: int,
                       local_ip: str, port: int = VXLAN_PORT) -> None:
        """Network namespace with br0 (gateway, mtu, up) and vxlan0 (mtu, master br0, up).

        If this call created the namespace and then fails, it removes it again.
        """
        with _failing(f"cannot set up network namespace {ns_path}"):
            ipaddress.IPv4Address(local_ip)
            ipaddress.IPv4Interface(gateway_cidr)
            created = not netns.is_netns(ns_path)
            netns.create_netns(ns_path)
        try:
            self._ensure_overlay(ns_path, vni, gateway_cidr, mtu, local_ip, port)
        except BaseException:
            if created:
                try:
                    self.remove_overlay(ns_path)
                except DataplaneError:
                    pass  # the original error matters more
            raise

    def _ensure_overlay(self, ns_path: str, vni: int, gateway_cidr: str, mtu: int,
                        local_ip: str, port: int) -> None:
        br_index = self._ensure_bridge(ns_path, BRIDGE, gateway_cidr, mtu)
        ipr = self._ipr(ns_path)
        want = {"vni": vni, "port": port, "local": local_ip, "learning": False, "proxy": True,
                "l2miss": False, "l3miss": False}
        where = f"network namespace {ns_path}"
        with _failing(f"cannot set up {VXLAN} (vni {vni}, port {port}, local {local_ip}) "
                      f"in {where}"):
            link = self._get(ipr, VXLAN)
            if link is not None and _vxlan_config(link) != want:
                ipr.link("del", index=link["index"])
                link = None
            if link is None:
                self._create_vxlan(ns_path, vni, local_ip, port, mtu)
                link = ipr.link("get", ifname=VXLAN)[0]
            ipr.link("set", index=link["index"], master=br_index, mtu=mtu, state="up")

    def _create_vxlan(self, ns_path: str, vni: int, local_ip: str, port: int, mtu: int) -> None:
        """Create vxlan0 in the host namespace under a temporary name and move it to ns_path.

        Its UDP socket belongs to the namespace it was created in, which is what puts every
        network's traffic on the host's underlay port.
        """
        home = self._ipr(None)
        tmp = _TMP_PREFIX + secrets.token_hex(5)
        spec = dict(kind="vxlan", vxlan_id=vni, vxlan_local=local_ip, vxlan_port=port,
                    vxlan_learning=0, vxlan_proxy=1, vxlan_l2miss=0, vxlan_l3miss=0, mtu=mtu)
        try:
            home.link("add", ifname=tmp, **spec)
        except NetlinkError as exc:
            # A crash between create and move leaves a temporary device holding the VNI.
            if exc.code != errno.EEXIST or not self._drop_stale_vxlan(vni, port):
                if exc.code == errno.EEXIST:
                    raise DataplaneError(f"VNI {vni} on UDP port {port} is already used by "
                                         f"another vxlan device of the {self._home_label}",
                                         exc.code) from exc
                raise
            home.link("add", ifname=tmp, **spec)
        index = home.link("get", ifname=tmp)[0]["index"]
        try:
            with _ns_fd(ns_path) as fd:
                # One message moves and renames, so no name clash is possible on either side.
                home.link("set", index=index, net_ns_fd=fd, ifname=VXLAN)
        except BaseException:
            home.link("del", index=index)
            raise

    def _drop_stale_vxlan(self, vni: int, port: int) -> bool:
        home = self._ipr(None)
        dropped = False
        for link in home.link("dump"):
            name = link.get("ifname") or ""
            if (name.startswith(_TMP_PREFIX) and _attr(link, "linkinfo", "kind") == "vxlan"
                    and _attr(link, "linkinfo", "data", "vxlan_id") == vni
                    and _attr(link, "linkinfo", "data", "vxlan_port") == port):
                home.link("del", index=link["index"])
                dropped = True
        return dropped

    def remove_overlay(self, ns_path: str) -> None:
        """Delete the network namespace and its devices; no error if it does not exist."""
        if netns.is_netns(ns_path):
            ipr = self._ipr(ns_path)
            with _failing(f"cannot delete the devices of network namespace {ns_path}"):
                # Namespace teardown is asynchronous; deleting the devices now releases the
                # VNI at once (so it can be reused right away) and unplugs the containers.
                vxlan = self._get(ipr, VXLAN)
                if vxlan is not None:
                    ipr.link("del", index=vxlan["index"])
                for link in ipr.link("dump"):
                    if link.get("ifname") != "lo":
                        try:
                            ipr.link("del", index=link["index"])
                        except NetlinkError as exc:
                            if exc.code != errno.ENODEV:  # a veth gone with its peer
                                raise
        self.forget(ns_path)
        with _failing(f"cannot delete network namespace {ns_path}"):
            netns.delete_netns(ns_path)

    def vxlan_info(self, ns_path: str) -> dict[str, Any]:
        """vni, port, local, learning, proxy, l2miss, l3miss, mtu, master, up of vxlan0."""
        ipr = self._ipr(ns_path)
        with _failing(f"cannot read {VXLAN} in network namespace {ns_path}"):
            link = self._get(ipr, VXLAN)
            if link is None:
                raise DataplaneError(f"no {VXLAN} in network namespace {ns_path}", errno.ENODEV)
            master = link.get("master")
            info = _vxlan_config(link)
            info.update(mtu=link.get("mtu"), up=bool(link["flags"] & 1),
                        master=ipr.link("get", index=master)[0].get("ifname") if master else None)
            return info

    # -- containers ---------------------------------------------------------------------------

    def attach(self, net_ns: str | None, container_ns: str, host_ifname: str, ip_cidr: str,
               mac: str, mtu: int, gateway: str | None = None, bridge: str = BRIDGE,
               ifname: str = "eth0") -> None:
        """Plug a container into `bridge` of `net_ns` (None: host namespace) with a veth pair.

        The container end is created directly inside the container namespace, named `ifname`,
        with `ip_cidr`, `mac` and `mtu`, up, plus `lo` up and (if given) a default route via
        `gateway`. Calling it again converges an existing pair instead of failing.
        """
        _check_ifname(host_ifname)
        _check_ifname(ifname)
        what = (f"cannot attach {container_ns} ({ifname} {ip_cidr} {mac} mtu {mtu}) via "
                f"{host_ifname} to {bridge} in {self._label(net_ns)}")
        with _failing(what):
            addr = ipaddress.IPv4Interface(ip_cidr)
            if not _MAC.fullmatch(mac):
                raise ValueError(f"malformed MAC address {mac!r}")
        ipr = self._ipr(net_ns)
        with _failing(what), self._transient(container_ns) as cipr:
            br = self._get(ipr, bridge)
            if br is None:
                raise DataplaneError(f"{what}: no bridge {bridge}", errno.ENODEV)
            # Optimistic: a fresh container is the common case, so try to create first and
            # only inspect what exists when the kernel says a name is taken.
            fresh = self._add_veth(ipr, container_ns, host_ifname, ifname, mac, mtu,
                                   br["index"], quiet=True)
            if not fresh:
                self._adopt_veth(ipr, cipr, container_ns, host_ifname, ifname, mac, mtu,
                                 br["index"], what)
            try:
                self._configure_container(cipr, ifname, addr, gateway, fresh)
            except BaseException:
                if fresh:  # do not leave a half-configured pair behind
                    try:
                        self._delete_link(net_ns, host_ifname)
                    except DataplaneError:
                        pass
                raise

    def _configure_container(self, cipr: IPRoute, ifname: str, addr: ipaddress.IPv4Interface,
                             gateway: str | None, fresh: bool) -> None:
        index = cipr.link("get", ifname=ifname)[0]["index"]
        if fresh:  # nothing to compare with: skip the address dump
            cipr.addr("add", index=index, address=str(addr.ip),
                      prefixlen=addr.network.prefixlen)
        else:
            self._ensure_addresses(cipr, index, addr)
        cipr.link("set", index=index, state="up")
        cipr.link("set", index=_LOOPBACK_INDEX, state="up")
        if gateway is not None:
            cipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)

    @staticmethod
    def _add_veth(ipr: IPRoute, container_ns: str, host_ifname: str, ifname: str, mac: str,
                  mtu: int, master: int, quiet: bool = False) -> bool:
        """Create the pair with its peer born inside the container (no move, no rename).

        Returns False instead of raising when `quiet` and a name is already taken.
        """
        try:
            with _ns_fd(container_ns) as fd:
                ipr.link("add", ifname=host_ifname, kind="veth", mtu=mtu, master=master,
                         state="up", peer={"ifname": ifname, "net_ns_fd": fd, "address": mac,
                                           "mtu": mtu})
        except NetlinkError as exc:
            if quiet and exc.code == errno.EEXIST:
                return False
            raise
        return True

    def _adopt_veth(self, ipr: IPRoute, cipr: IPRoute, container_ns: str, host_ifname: str,
                    ifname: str, mac: str, mtu: int, master: int, what: str) -> None:
        """Converge an existing pair, or replace a stale host end, or refuse a name clash."""
        host = self._get(ipr, host_ifname)
        peer = self._get(cipr, ifname)
        if host is not None and not _paired(host, peer):
            # A leftover host end whose partner is not this container's device: start over.
            ipr.link("del", index=host["index"])
            host = None
        if host is None:
            if peer is not None:
                raise DataplaneError(f"{what}: the container already has a device named "
                                     f"{ifname}", errno.EEXIST)
            self._add_veth(ipr, container_ns, host_ifname, ifname, mac, mtu, master)
            return
        ipr.link("set", index=host["index"], master=master, mtu=mtu, state="up")
        if peer is not None and (peer.get("address") != mac.lower() or peer.get("mtu") != mtu):
            cipr.link("set", index=peer["index"], address=mac, mtu=mtu)

    def detach(self, net_ns: str | None, host_ifname: str) -> None:
        """Delete a container's veth (its peer goes with it); no error if it is gone."""
        if net_ns is not None and self._key(net_ns) not in self._sockets \
                and not netns.is_netns(net_ns):
            return  # the whole network namespace is gone, and the veth with it
        self._delete_link(net_ns, host_ifname)

    # -- remote endpoints ---------------------------------------------------------------------

    def _vxlan_index(self, ipr: IPRoute, ns_path: str) -> int:
        link = self._get(ipr, VXLAN)
        if link is None:
            raise DataplaneError(f"no {VXLAN} in network namespace {ns_path}", errno.ENODEV)
        return int(link["index"])

    def peers(self, ns_path: str) -> set[tuple[str, str, str]]:
        """(mac, ip, vtep_ip) of the static remote endpoints programmed on vxlan0."""
        ipr = self._ipr(ns_path)
        with _failing(f"cannot read the peers of network namespace {ns_path}"):
            vx = self._vxlan_index(ipr, ns_path)
            vteps: dict[str, str] = {}
            for m in ipr.fdb("dump", ifindex=vx):
                # The bridge's own entries for the port are NTF_MASTER and have no dst.
                if (m["ifindex"] == vx and m["flags"] & NTF_SELF
                        and m["state"] & NUD_PERMANENT and m.get("dst")):
                    vteps[m.get("lladdr")] = m.get("dst")
            found = set()
            for m in ipr.neigh("dump", ifindex=vx, family=AF_INET):
                mac = m.get("lladdr")
                if m["ifindex"] == vx and m["state"] & NUD_PERMANENT and mac in vteps:
                    found.add((mac, m.get("dst"), vteps[mac]))
            return found

    def add_peer(self, ns_path: str, mac: str, ip: str, vtep_ip: str) -> None:
        """Static FDB (mac -> vtep) and neighbour (ip -> mac) entries on vxlan0 (replace)."""
        mac = mac.lower()
        ipr = self._ipr(ns_path)
        with _failing(f"cannot add peer {ip} {mac} via {vtep_ip} in {ns_path}"):
            vx = self._vxlan_index(ipr, ns_path)
            ipr.fdb("replace", ifindex=vx, lladdr=mac, dst=vtep_ip,
                    state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
            ipr.neigh("replace", ifindex=vx, dst=ip, lladdr=mac, state=NUD_PERMANENT)

    def remove_peer(self, ns_path: str, mac: str, ip: str, vtep_ip: str) -> None:
        """Remove the entries of that exact peer; no error if they are gone.

        Entries that now describe a newer endpoint stay: the MAC re-pointed to another VTEP
        (the endpoint moved) or the IP mapped to another MAC (the address was reused).
        """
        mac = mac.lower()
        if self._key(ns_path) not in self._sockets and not netns.is_netns(ns_path):
            return
        ipr = self._ipr(ns_path)
        with _failing(f"cannot remove peer {ip} {mac} via {vtep_ip} in {ns_path}"):
            link = self._get(ipr, VXLAN)
            if link is None:
                return
            vx = int(link["index"])
            dst = _fdb_dst(ipr, vx, mac)
            if dst is not None and dst != vtep_ip:
                return  # the endpoint moved to another host since: its entries are current
            if dst is not None:
                _ignore_missing(ipr.fdb, "del", ifindex=vx, lladdr=mac, dst=vtep_ip)
            if _neigh_mac(ipr, vx, ip) == mac:
                _ignore_missing(ipr.neigh, "del", ifindex=vx, dst=ip)
