"""The netlink dump parser behind the agent's peer reads (pure: crafted datagrams)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from overnet.dataplane import nldump

NUD_PERMANENT, NTF_SELF = 0x80, 0x02


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, seq, 0) + body


def neigh(ifindex: int, mac: str, dst: str, family: int = nldump.AF_BRIDGE) -> bytes:
    head = struct.pack("=BxxxiHBB", family, ifindex, NUD_PERMANENT, NTF_SELF, 0)
    return head + attr(nldump.NDA_LLADDR, bytes.fromhex(mac.replace(":", ""))) + attr(
        nldump.NDA_DST, socket.inet_pton(socket.AF_INET, dst))


def test_entries_of_the_dump_until_done() -> None:
    out: list = []
    first = (message(nldump.RTM_NEWNEIGH, 7, neigh(5, "02:42:0a:00:00:02", "192.168.1.2"))
             + message(nldump.RTM_NEWNEIGH, 6, neigh(9, "02:42:0a:00:00:09", "10.0.0.9")))
    assert not nldump._parse(first, 7, out)          # another request's answer is skipped
    assert nldump._parse(message(nldump.NLMSG_DONE, 7, b"\0" * 4), 7, out)
    assert out == [(5, NUD_PERMANENT, NTF_SELF, "02:42:0a:00:00:02", "192.168.1.2")]


def test_an_entry_without_a_destination_has_an_empty_one() -> None:
    out: list = []
    head = struct.pack("=BxxxiHBB", nldump.AF_BRIDGE, 3, NUD_PERMANENT, 0, 0)
    body = head + attr(nldump.NDA_LLADDR, b"\x02\x00\x00\x00\x00\x01")
    nldump._parse(message(nldump.RTM_NEWNEIGH, 1, body), 1, out)
    assert out == [(3, NUD_PERMANENT, 0, "02:00:00:00:00:01", "")]


def test_an_error_answer_raises_with_its_errno() -> None:
    with pytest.raises(OSError) as exc:
        nldump._parse(message(nldump.NLMSG_ERROR, 1, struct.pack("=i", -errno.EPERM)), 1, [])
    assert exc.value.errno == errno.EPERM


def test_a_malformed_length_raises() -> None:
    with pytest.raises(OSError):
        nldump._parse(struct.pack("=IHHII", 4, nldump.RTM_NEWNEIGH, 0, 1, 0), 1, [])
