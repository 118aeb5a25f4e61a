"""The hand-packed rtnetlink requests (dataplane/rtnl.py), read back by pyroute2's parser."""

from __future__ import annotations

import errno
import socket
import struct

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from overnet.dataplane import rtnl


def _decode(cls, kind: int, flags: int, body: bytes):  # type: ignore[no-untyped-def]
    m = cls(rtnl._NLMSGHDR.pack(16 + len(body), kind, flags, 1, 0) + body)
    m.decode()
    return m


def test_new_veth_is_what_pyroute2_reads() -> None:
    flags, body = rtnl.new_veth("veth1234567", 1450, 7, "eth0", "02:42:0A:00:00:05", 9)
    assert flags & rtnl.NLM_F_CREATE and flags & rtnl.NLM_F_EXCL and flags & rtnl.NLM_F_ECHO
    m = _decode(ifinfmsg, rtnl.RTM_NEWLINK, flags, body)
    assert (m["flags"], m["change"]) == (rtnl.IFF_UP, rtnl.IFF_UP)
    assert (m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_MTU"), m.get_attr("IFLA_MASTER")) == \
        ("veth1234567", 1450, 7)
    info = m.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = dict(info.get_attr("IFLA_INFO_DATA")["attrs"])["VETH_INFO_PEER"]
    assert dict(peer["attrs"]) == {"IFLA_IFNAME": "eth0", "IFLA_ADDRESS": "02:42:0a:00:00:05",
                                   "IFLA_MTU": 1450, "IFLA_NET_NS_FD": 9}
    assert peer["flags"] == 0   # brought up by a later request (see new_veth)


def test_address_route_and_up() -> None:
    a = _decode(ifaddrmsg, rtnl.RTM_NEWADDR, 0, rtnl.new_address(3, "10.0.0.7", 24))
    assert (a["index"], a["prefixlen"], a.get_attr("IFA_LOCAL"), a.get_attr("IFA_ADDRESS")) == \
        (3, 24, "10.0.0.7", "10.0.0.7")
    r = _decode(rtmsg, rtnl.RTM_NEWROUTE, 0, rtnl.default_route(3, "10.0.0.1"))
    assert (r["dst_len"], r["table"], r["proto"], r.get_attr("RTA_GATEWAY"),
            r.get_attr("RTA_OIF")) == (0, 254, rtnl.RTPROT_STATIC, "10.0.0.1", 3)
    up = _decode(ifinfmsg, rtnl.RTM_NEWLINK, 0, rtnl.ifinfo(1, up=True))
    assert (up["index"], up["flags"], up["change"]) == (1, 1, 1)
    assert (_decode(ifinfmsg, rtnl.RTM_NEWLINK, 0, rtnl.ifinfo(2))["change"]) == 0


def test_error_and_echo_parsing() -> None:
    # An extended ack: errno, the capped request header, then the kernel's message.
    request = rtnl._NLMSGHDR.pack(40, rtnl.RTM_NEWLINK, 5, 7, 0)
    payload = struct.pack("=i", -17) + request + rtnl.attr(rtnl.NLMSGERR_ATTR_MSG,
                                                         b"File exists\0")
    assert rtnl._error(payload) == (17, "File exists")
    reply = rtnl.Reply(17, "File exists")
    try:
        reply.check("making veth1")
    except rtnl.RtnlError as e:
        assert e.errno == 17 and "making veth1: File exists" in str(e)
    else:
        raise AssertionError("no error raised")
    link = rtnl.ifinfo(4) + rtnl.attr(rtnl.IFLA_LINK, struct.pack("=I", 2))
    index, attrs = rtnl._link(link)
    assert index == 4 and rtnl.u32(attrs[rtnl.IFLA_LINK]) == 2
    # Two messages in one datagram, the second padded: both found, with their sequence.
    msgs = b"".join(rtnl._NLMSGHDR.pack(16 + len(b), 2, 0, seq, 0) + b + b"\0" * (-len(b) % 4)
                    for seq, b in ((1, b"\0" * 4), (2, b"\0" * 6)))
    assert [(k, s) for k, s, _ in rtnl._messages(msgs)] == [(2, 1), (2, 2)]


def test_fdb_and_neighbour_entries() -> None:
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    f = _decode(ndmsg, rtnl.RTM_NEWNEIGH, 0, rtnl.fdb_entry(5, "02:42:0a:00:00:07", "192.0.2.9"))
    assert (f["family"], f["ifindex"], f["state"], f["flags"]) == \
        (rtnl.AF_BRIDGE, 5, rtnl.NUD_PERMANENT | rtnl.NUD_NOARP, rtnl.NTF_SELF)
    assert (f.get_attr("NDA_LLADDR"), f.get_attr("NDA_DST")) == ("02:42:0a:00:00:07", "192.0.2.9")
    n = _decode(ndmsg, rtnl.RTM_NEWNEIGH, 0, rtnl.neighbour(5, "10.0.0.7", "02:42:0a:00:00:07"))
    assert (n["family"], n["ifindex"], n["state"], n["flags"]) == (2, 5, rtnl.NUD_PERMANENT, 0)
    assert (n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")) == ("10.0.0.7", "02:42:0a:00:00:07")


def _answers(*msgs: tuple[int, int, bytes]) -> rtnl.Rtnl:
    """An Rtnl whose socket is one end of a datagram pair, the answers already queued."""
    import socket as s
    ours, theirs = s.socketpair(s.AF_UNIX, s.SOCK_DGRAM)
    for kind, seq, body in msgs:
        theirs.send(rtnl._NLMSGHDR.pack(16 + len(body), kind, 2, seq, 0) + body)
    r = object.__new__(rtnl.Rtnl)
    r.sock, r._seq, r.peer = ours, 0, theirs   # type: ignore[attr-defined]
    return r


def _entry(ifindex: int, mac: str, dst: str | None, family: int = rtnl.AF_BRIDGE) -> bytes:
    body = rtnl._NDMSG.pack(family, ifindex, rtnl.NUD_PERMANENT, rtnl.NTF_SELF, 0)
    body += rtnl.attr(rtnl.NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))
    return body + (rtnl.attr(rtnl.NDA_DST, socket.inet_aton(dst)) if dst else b"")


def test_a_dump_is_read_as_tuples_until_done() -> None:
    raw = _answers((rtnl.RTM_NEWNEIGH, 9, _entry(5, "02:42:0a:00:00:09", "10.0.0.9")),  # stale
                   (rtnl.RTM_NEWNEIGH, 1, _entry(5, "02:42:0a:00:00:02", "192.168.1.2")),
                   (rtnl.RTM_NEWNEIGH, 1, _entry(6, "02:42:0a:00:00:03", "192.168.1.3")),
                   (rtnl.RTM_NEWNEIGH, 1, _entry(5, "02:00:00:00:00:01", None)),
                   (rtnl.NLMSG_DONE, 1, b"\0" * 4))
    assert rtnl.fdb_dump(raw, 5) == [
        (5, rtnl.NUD_PERMANENT, rtnl.NTF_SELF, "02:42:0a:00:00:02", "192.168.1.2"),
        (5, rtnl.NUD_PERMANENT, rtnl.NTF_SELF, "02:00:00:00:00:01", "")]


def test_a_dump_error_or_a_malformed_answer_raises() -> None:
    raw = _answers((rtnl.NLMSG_ERROR, 1, struct.pack("=i", -errno.EPERM)))
    try:
        rtnl.neighbour_dump(raw, 5)
    except rtnl.RtnlError as e:
        assert e.errno == errno.EPERM
    else:
        raise AssertionError("no error raised")
    try:
        rtnl._messages(struct.pack("=IHHII", 4, rtnl.RTM_NEWNEIGH, 0, 1, 0))
    except rtnl.RtnlError as e:
        assert e.errno == errno.EPROTO
    else:
        raise AssertionError("no error raised")
