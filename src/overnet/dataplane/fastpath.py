"""A new container's macvlan made from the event loop's own thread.

Every other call goes to the kernel thread (worker.py), and costs two thread hand-overs, each
a wake-up of an idle CPU: ~0.4 ms of a ~1.4 ms attach. The common case, a new container on a
network whose namespace and vxlan0 exist, needs neither pyroute2 nor anything the kernel
thread holds: three round trips of hand-packed requests (macvlan.plug_fresh) on sockets of
its own. Anything else is the kernel thread's, which converges and explains.

Sockets are kept per network namespace, checked against the namespace file on every use: a
namespace made again under the same path (a network removed and created again) gets a new
socket, not one still bound to the old namespace.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from . import netns, rtnl
from .macvlan import plug_fresh
from .model import VXLAN, DataplaneError, check_ifname, check_mac
from .plumbing import ns_fd


class LoopAttach:
    """Use from one thread (the event loop's): its sockets are its own."""

    def __init__(self) -> None:
        self._nets: dict[str, tuple[tuple[int, int], rtnl.Rtnl, dict[str, int]]] = {}

    def attach(self, net_ns: str, container_ns: str, ip_cidr: str, mac: str, mtu: int,
               gateway: str | None, ifname: str) -> bool:
        """True: attached. False: for the kernel thread, which converges what may be left
        (a device made, then refused its configuration) and explains what is wrong."""
        try:
            check_ifname(ifname)
            check_mac(mac)
            addr = ipaddress.IPv4Interface(ip_cidr)
            sock, lower = self._net(net_ns, VXLAN)
            if lower is None:
                return False
            with ns_fd(container_ns) as cfd:
                with netns.entered(cfd):
                    craw = rtnl.Rtnl()
                try:
                    if plug_fresh(sock, craw, lower, cfd, ifname, mac.lower(), mtu, addr,
                                  gateway, f"configuring {ifname} in {container_ns}"):
                        return True
                finally:
                    craw.close()
        except (OSError, ValueError, DataplaneError):   # (DataplaneError: a namespace)
            return False
        self.forget(net_ns)     # nothing made: perhaps a stale vxlan0 index
        return False

    def _net(self, path: str, device: str) -> tuple[rtnl.Rtnl, int | None]:
        """The socket of a network namespace and the ifindex of its `device` (None if none)."""
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino)
        known = self._nets.get(path)
        if known is None or known[0] != ident:
            self.forget(path)
            with netns.entered(path):
                sock = rtnl.Rtnl()
            known = self._nets[path] = (ident, sock, {})
        indexes = known[2]
        if device not in indexes:
            try:
                with netns.entered(path):
                    indexes[device] = socket.if_nametoindex(device)
            except OSError:
                return known[1], None
        return known[1], indexes[device]

    def forget(self, path: str) -> None:
        """Drop what is kept for a namespace (before it is deleted: a socket keeps it)."""
        known = self._nets.pop(path, None)
        if known is not None:
            known[1].close()

    def close(self) -> None:
        for path in list(self._nets):
            self.forget(path)
