"""Neighbour and FDB dumps read straight off a netlink socket, as plain tuples.

pyroute2 turns each dumped entry into a tree of message objects (~6 KB each, tied in
reference cycles that only the cyclic collector frees): a dump of a vxlan device with 1,000
remote peers made ~6 MB of garbage and took ~0.6 s. The agent re-reads its peers every resync,
so this module parses the two dumps it needs (RTM_GETNEIGH, AF_BRIDGE and AF_INET) with
`struct`, keeping only (MAC, address) pairs.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys

from overnet.dataplane import netns

NETLINK_ROUTE = 0
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
AF_BRIDGE = 7

_NLMSGHDR = struct.Struct("=IHHII")          # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")          # family, ifindex, state, flags, type
_IFINFOMSG = struct.Struct("=BxHiII")         # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")               # len, type
_U32_ATTR = struct.Struct("=HHI")
_BUFSIZE = 1 << 16

Entry = tuple[int, int, int, str, str]       # ifindex, state, flags, lladdr, dst


def fdb(path: str, ifindex: int) -> list[Entry]:
    """The bridge FDB entries of device `ifindex` in namespace `path` (a vxlan device's own
    entries carry their VTEP in dst; "" where an entry has none)."""
    # An ifinfomsg header (not an ndmsg) asks the kernel to dump only that port's entries.
    body = _IFINFOMSG.pack(AF_BRIDGE, 0, ifindex, 0, 0)
    return [e for e in _dump(path, body) if e[0] == ifindex]


def neighbours(path: str, ifindex: int) -> list[Entry]:
    """The IPv4 neighbour entries of device `ifindex` in namespace `path`."""
    body = _NDMSG.pack(socket.AF_INET, 0, 0, 0, 0) + _U32_ATTR.pack(8, NDA_IFINDEX, ifindex)
    return [e for e in _dump(path, body) if e[0] == ifindex]


def _dump(path: str, body: bytes) -> list[Entry]:
    with netns.entered(path):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_ROUTE)
    with sock:
        sock.bind((0, 0))
        seq = 1
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETNEIGH,
                                 NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out: list[Entry] = []
        while True:
            data = sock.recv(_BUFSIZE)
            if _parse(data, seq, out):
                return out


def _parse(data: bytes, seq: int, out: list[Entry]) -> bool:
    """Append the entries of one datagram to `out`; True once the dump is complete."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            raise OSError(errno.EPROTO, "malformed netlink message")
        body = offset + _NLMSGHDR.size
        if mseq == seq:
            if kind == NLMSG_DONE:
                return True
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, body)[0]
                if code:
                    raise OSError(code, os.strerror(code))
            elif kind == RTM_NEWNEIGH:
                out.append(_entry(data, body, offset + length))
        offset += (length + 3) & ~3
    return False


def _entry(data: bytes, start: int, end: int) -> Entry:
    _, ifindex, state, flags, _ = _NDMSG.unpack_from(data, start)
    lladdr = dst = ""
    pos = start + _NDMSG.size
    while pos + _RTATTR.size <= end:
        alen, atype = _RTATTR.unpack_from(data, pos)
        if alen < _RTATTR.size:
            break
        value = data[pos + _RTATTR.size:pos + alen]
        if atype == NDA_LLADDR:
            lladdr = value.hex(":")
        elif atype == NDA_DST and len(value) in (4, 16):
            # interned: an FDB's VTEPs repeat (one per host), and the caller keeps them
            dst = sys.intern(socket.inet_ntop(socket.AF_INET if len(value) == 4
                                              else socket.AF_INET6, value))
        pos += (alen + 3) & ~3
    return ifindex, state, flags, lladdr, dst
