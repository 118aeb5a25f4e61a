"""A few rtnetlink requests packed by hand, for the paths that run per container.

pyroute2 spends ~0.3 ms of Python on each request (a `link get` of lo costs as much as the
kernel's creation of a device) and turns each dumped entry into a tree of message objects
(~6 KB each, in reference cycles only the cyclic collector frees). A veth attach makes five
requests; a host programs and re-reads a peer per remote endpoint of its networks (a dump of
1,000 peers: ~6 MB of garbage and ~0.6 s; adding them, 3.7 s). Here the messages are packed
with struct, several go out in one send, and answers are read straight from the socket as
tuples: a fresh pair in two round trips, peers in batches. Everything else stays with
pyroute2.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from dataclasses import dataclass

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h, linux/if_addr.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH, RTM_GETNEIGH = 20, 24, 28, 30
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP = 0x1, 0x4, 0x8, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_NET_NS_FD = 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE = 1, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NUD_NOARP, NUD_PERMANENT, NTF_SELF = 0x40, 0x80, 0x02
AF_BRIDGE = 7
IFF_UP = 0x1
LOOPBACK_INDEX = 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTATTR = struct.Struct("=HH")


class RtnlError(OSError):
    """The kernel refused a request: errno and, if it said one, its own explanation."""


def attr(kind: int, data: bytes) -> bytes:
    length = _RTATTR.size + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def _str(s: str) -> bytes:
    return s.encode() + b"\0"


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


def ifinfo(index: int = 0, up: bool = False) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP if up else 0)


def new_veth(host_ifname: str, mtu: int, master: int, peer_ifname: str, peer_mac: str,
             peer_ns_fd: int) -> tuple[int, bytes]:
    """(flags, body) of an RTM_NEWLINK making a veth pair: `host_ifname` here, up, a port of
    `master`; its peer born in `peer_ns_fd`, named, with its MAC and MTU, down (asked to come
    up in the same request, the peer fails with ENOTCONN after ~15 ms: set it up afterwards)."""
    peer = (ifinfo() + attr(IFLA_IFNAME, _str(peer_ifname))
            + attr(IFLA_ADDRESS, _mac(peer_mac))
            + attr(IFLA_MTU, _u32(mtu)) + attr(IFLA_NET_NS_FD, _u32(peer_ns_fd)))
    info = attr(IFLA_INFO_KIND, _str("veth")) + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
    body = (ifinfo(up=True) + attr(IFLA_IFNAME, _str(host_ifname)) + attr(IFLA_MTU, _u32(mtu))
            + attr(IFLA_MASTER, _u32(master)) + attr(IFLA_LINKINFO, info))
    return NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, body


def new_macvlan(ifname: str, lower: int, mac: str, mtu: int, ns_fd: int) -> tuple[int, bytes]:
    """(flags, body) of an RTM_NEWLINK making a bridge-mode macvlan of device `lower` (of
    the socket's namespace), born in `ns_fd`: named, with its MAC and MTU, up. The kernel
    echoes a device to the namespace it is born in, not to the asking socket: look it up
    there (get_link)."""
    info = (attr(IFLA_INFO_KIND, _str("macvlan"))
            + attr(IFLA_INFO_DATA, attr(IFLA_MACVLAN_MODE, _u32(MACVLAN_MODE_BRIDGE))))
    body = (ifinfo(up=True) + attr(IFLA_IFNAME, _str(ifname)) + attr(IFLA_ADDRESS, _mac(mac))
            + attr(IFLA_MTU, _u32(mtu)) + attr(IFLA_LINK, _u32(lower))
            + attr(IFLA_NET_NS_FD, _u32(ns_fd)) + attr(IFLA_LINKINFO, info))
    return NLM_F_CREATE | NLM_F_EXCL, body


def get_link(ifname: str) -> bytes:
    """Body of an RTM_GETLINK of the device named `ifname` (answered as RTM_NEWLINK)."""
    return ifinfo() + attr(IFLA_IFNAME, _str(ifname))


def new_address(index: int, ip: str, prefixlen: int) -> bytes:
    raw = socket.inet_aton(ip)
    return (_IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, 0, index)
            + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw))


def default_route(index: int, gateway: str) -> bytes:
    return (_RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST,
                        0)
            + attr(RTA_GATEWAY, socket.inet_aton(gateway)) + attr(RTA_OIF, _u32(index)))


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def fdb_entry(index: int, mac: str, vtep: str) -> bytes:
    """`bridge fdb replace MAC dev VXLAN dst VTEP self permanent` (with CREATE|REPLACE)."""
    return (_NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT | NUD_NOARP, NTF_SELF, 0)
            + attr(NDA_LLADDR, _mac(mac)) + attr(NDA_DST, socket.inet_aton(vtep)))


def neighbour(index: int, ip: str, mac: str) -> bytes:
    """`ip neigh replace IP lladdr MAC dev VXLAN nud permanent` (with CREATE|REPLACE)."""
    return (_NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0)
            + attr(NDA_DST, socket.inet_aton(ip)) + attr(NDA_LLADDR, _mac(mac)))


@dataclass
class Reply:
    """What came back for one request: its error (0: done) and the links it echoed."""
    error: int = 0
    message: str = ""
    links: list[tuple[int, dict[int, bytes]]] | None = None   # (ifindex, attributes)

    def check(self, what: str) -> None:
        if self.error:
            text = self.message or os.strerror(self.error)
            raise RtnlError(self.error, f"{what}: {text}")


class Rtnl:
    """One NETLINK_ROUTE socket, bound in the namespace current when it is made."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.bind((0, 0))
        except OSError:
            self.sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def requests(self, msgs: list[tuple[int, int, bytes]]) -> list[Reply]:
        """Send (type, flags, body) requests in one datagram; each is acknowledged. Returns
        one Reply per request, in order. The kernel stops at nothing: a failed request does
        not stop the ones after it, so callers order them and check each reply."""
        out, seqs = [], []
        for kind, flags, body in msgs:
            self._seq = self._seq % 0x7FFFFFFF + 1
            seqs.append(self._seq)
            out.append(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind,
                                      NLM_F_REQUEST | NLM_F_ACK | flags, self._seq, 0) + body)
        self.sock.send(b"".join(out))
        replies = {seq: Reply() for seq in seqs}
        pending = set(seqs)
        while pending:
            data = self.sock.recv(65536)
            for kind, seq, payload in _messages(data):
                reply = replies.get(seq)
                if reply is None:
                    continue           # a late answer to an earlier, abandoned request
                if kind == NLMSG_ERROR:
                    reply.error, reply.message = _error(payload)
                    pending.discard(seq)
                elif kind == RTM_NEWLINK:
                    reply.links = (reply.links or []) + [_link(payload)]
        return [replies[s] for s in seqs]


    def dump(self, kind: int, body: bytes) -> list[bytes]:
        """The payloads of a dump request's answers (raises OSError on an error answer)."""
        self._seq = self._seq % 0x7FFFFFFF + 1
        seq = self._seq
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind,
                                      NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out = []
        while True:
            for mkind, mseq, payload in _messages(self.sock.recv(65536)):
                if mseq != seq:
                    continue               # a late answer to an earlier, abandoned request
                if mkind == NLMSG_DONE:
                    return out
                if mkind == NLMSG_ERROR:
                    code, message = _error(payload)
                    raise RtnlError(code, message or os.strerror(code))
                out.append(payload)


# -- the neighbour tables of a vxlan device (its remote peers) ------------------------------

Entry = tuple[int, int, int, str, str]       # ifindex, state, flags, lladdr, dst


def fdb_dump(sock: Rtnl, ifindex: int) -> list[Entry]:
    """The bridge FDB entries of device `ifindex` (a vxlan device's own entries carry their
    VTEP in dst; "" where an entry has none)."""
    # An ifinfomsg header (not an ndmsg) asks the kernel for that port's entries only.
    body = _IFINFOMSG.pack(AF_BRIDGE, 0, ifindex, 0, 0)
    return [e for e in map(neighbour_entry, sock.dump(RTM_GETNEIGH, body)) if e[0] == ifindex]


def neighbour_dump(sock: Rtnl, ifindex: int) -> list[Entry]:
    """The IPv4 neighbour entries of device `ifindex`."""
    body = _NDMSG.pack(socket.AF_INET, 0, 0, 0, 0) + attr(NDA_IFINDEX, _u32(ifindex))
    return [e for e in map(neighbour_entry, sock.dump(RTM_GETNEIGH, body)) if e[0] == ifindex]


def neighbour_entry(payload: bytes) -> Entry:
    _, ifindex, state, flags, _ = _NDMSG.unpack_from(payload)
    attrs = _attrs(payload, _NDMSG.size)
    lladdr = attrs.get(NDA_LLADDR, b"").hex(":")
    dst = attrs.get(NDA_DST, b"")
    # interned: an FDB's VTEPs repeat (one per host), and the caller keeps them
    return ifindex, state, flags, lladdr, sys.intern(
        socket.inet_ntop(socket.AF_INET if len(dst) == 4 else socket.AF_INET6, dst)
        if len(dst) in (4, 16) else "")


def _messages(data: bytes) -> list[tuple[int, int, bytes]]:
    out, off = [], 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            raise RtnlError(errno.EPROTO, "malformed netlink message")
        out.append((kind, seq, data[off + _NLMSGHDR.size:off + length]))
        off += (length + 3) & ~3
    return out


def _error(payload: bytes) -> tuple[int, str]:
    """nlmsgerr: a negative errno, the request's header (capped), then extended-ack TLVs."""
    (code,) = struct.unpack_from("=i", payload)
    attrs = _attrs(payload, 4 + _NLMSGHDR.size)
    msg = attrs.get(NLMSGERR_ATTR_MSG, b"").split(b"\0", 1)[0].decode(errors="replace")
    return -code, msg


def _link(payload: bytes) -> tuple[int, dict[int, bytes]]:
    _, _, index, _, _ = _IFINFOMSG.unpack_from(payload)
    return index, _attrs(payload, _IFINFOMSG.size)


def _attrs(payload: bytes, off: int) -> dict[int, bytes]:
    out = {}
    while off + _RTATTR.size <= len(payload):
        length, kind = _RTATTR.unpack_from(payload, off)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = payload[off + _RTATTR.size:off + length]
        off += (length + 3) & ~3
    return out


def u32(data: bytes) -> int:
    return struct.unpack("=I", data[:4])[0]
