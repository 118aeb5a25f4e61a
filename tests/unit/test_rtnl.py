"""The hand-packed rtnetlink requests (dataplane/rtnl.py), read back by pyroute2's parser."""

from __future__ import annotations

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
