"""DnsServer on loopback (no namespaces, no root): real sockets, a fake upstream beside it."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest

from overnet.dns import DnsServer, Entry, NameTable
from tests.fake_upstream import FakeUpstream

MANY = [Entry(f"n{i}", f"10.0.{i // 250}.{i % 250 + 1}", ("many",)) for i in range(100)]


def make_table(*extra: Entry) -> NameTable:
    entries = [Entry("web", "10.0.0.2", ("www",)), *MANY, *extra]
    return NameTable.build("foobar", "overnet", entries, subnet="10.0.0.0/16")


TABLE = make_table()


def table() -> NameTable:
    return TABLE  # as the agent does: a table built in advance, handed out per query


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream({"example.test.": ["192.0.2.10"],
                               "big.test.": [f"192.0.2.{i}" for i in range(1, 101)]}).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def server(upstream: FakeUpstream) -> AsyncIterator[DnsServer]:
    srv = DnsServer(table, [upstream.address], timeout=1.0)
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop()


async def udp(server: DnsServer, qname: str, rdtype: str = "A", timeout: float = 5.0,
              **kw: object) -> dns.message.Message:
    host, port = server.address
    query = dns.message.make_query(qname, rdtype, **kw)
    return await dns.asyncquery.udp(query, host, timeout=timeout, port=port)


async def tcp(server: DnsServer, qname: str, rdtype: str = "A") -> dns.message.Message:
    host, port = server.address
    query = dns.message.make_query(qname, rdtype)
    return await dns.asyncquery.tcp(query, host, timeout=5.0, port=port)


def ips(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


async def test_answers_from_the_table_over_udp_and_tcp(server: DnsServer) -> None:
    assert ips(await udp(server, "web.foobar.overnet")) == ["10.0.0.2"]
    assert ips(await tcp(server, "WWW.foobar.")) == ["10.0.0.2"]
    empty = await udp(server, "web", "AAAA")
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer
    ptr = await udp(server, "2.0.0.10.in-addr.arpa.", "PTR")
    assert [rd.to_text() for rd in ptr.answer[0]] == ["web.foobar.overnet."]
    assert (await udp(server, "nope.overnet")).rcode() == dns.rcode.NXDOMAIN
    assert server.stats["answered"] == 4 and server.stats["nxdomain"] == 1


async def test_forwards_other_names(server: DnsServer, upstream: FakeUpstream) -> None:
    assert ips(await udp(server, "example.test")) == ["192.0.2.10"]
    assert ips(await tcp(server, "example.test")) == ["192.0.2.10"]
    assert (await udp(server, "missing.test")).rcode() == dns.rcode.NXDOMAIN
    assert upstream.received == 3 and server.stats["forwarded"] == 3


async def test_repeated_queries_answered_from_the_cache_under_their_own_id(
        server: DnsServer) -> None:
    host, port = server.address
    replies = []
    for qid in (1111, 2222):  # same bytes but for the ID
        query = dns.message.make_query("web.foobar.overnet", "A", id=qid)
        replies.append(await dns.asyncquery.udp(query, host, timeout=5.0, port=port))
    assert [r.id for r in replies] == [1111, 2222]
    assert ips(replies[0]) == ips(replies[1]) == ["10.0.0.2"]
    assert len(server._cache) == 1 and server.stats["answered"] == 2
    assert (await udp(server, "nope.overnet")).rcode() == dns.rcode.NXDOMAIN
    assert (await udp(server, "nope.overnet")).rcode() == dns.rcode.NXDOMAIN
    assert server.stats["nxdomain"] == 2
    assert ips(await tcp(server, "web.foobar.overnet")) == ["10.0.0.2"]  # its own entry
    assert len(server._cache) == 3


async def test_table_provider_is_asked_per_query(upstream: FakeUpstream) -> None:
    current = [make_table()]
    srv = DnsServer(lambda: current[0], [upstream.address])
    await srv.start("127.0.0.1", 0)
    try:
        for _ in range(2):  # the second answer comes from the cache
            assert (await udp(srv, "late.foobar.overnet")).rcode() == dns.rcode.NXDOMAIN
        current[0] = make_table(Entry("late", "10.0.0.77"))
        assert ips(await udp(srv, "late.foobar.overnet")) == ["10.0.0.77"]
    finally:
        await srv.stop()


async def test_large_local_answer_truncated_over_udp_whole_over_tcp(server: DnsServer) -> None:
    cut = await udp(server, "many.foobar.overnet")
    assert cut.flags & dns.flags.TC
    assert len(ips(await tcp(server, "many.foobar.overnet"))) == 100
    host, port = server.address
    query = dns.message.make_query("many.foobar.overnet", "A")
    response, used_tcp = await dns.asyncquery.udp_with_fallback(query, host, 5.0, port)
    assert used_tcp and len(ips(response)) == 100


async def test_large_forwarded_answer(server: DnsServer) -> None:
    # The fake upstream truncates at 512 bytes: the resolver must fetch it over TCP, then cut
    # it again for a UDP client without EDNS, and hand it whole to an EDNS client.
    assert (await udp(server, "big.test")).flags & dns.flags.TC
    assert len(ips(await udp(server, "big.test", use_edns=0, payload=4096))) == 100
    assert len(ips(await tcp(server, "big.test"))) == 100


async def test_dead_upstream_gives_servfail_within_the_timeout() -> None:
    dead = await FakeUpstream({}, silent=True).start()
    srv = DnsServer(table, [dead.address], timeout=0.5)
    await srv.start("127.0.0.1", 0)
    try:
        # The client waits 10 times the resolver's timeout: SERVFAIL must come first.
        response = await udp(srv, "example.test", timeout=5.0)
        assert response.rcode() == dns.rcode.SERVFAIL
        assert dead.received >= 1 and srv.stats["servfail"] == 1
        assert ips(await udp(srv, "web")) == ["10.0.0.2"]  # local names unaffected
    finally:
        await srv.stop()
        await dead.stop()


async def test_next_upstream_tried_when_the_first_is_dead(upstream: FakeUpstream) -> None:
    dead = await FakeUpstream({}, silent=True).start()
    srv = DnsServer(table, [dead.address, upstream.address], timeout=2.0)
    await srv.start("127.0.0.1", 0)
    try:
        assert ips(await udp(srv, "example.test")) == ["192.0.2.10"]
        assert dead.received == 1 and upstream.received == 1
    finally:
        await srv.stop()
        await dead.stop()


async def test_no_upstreams_gives_servfail_for_foreign_names() -> None:
    srv = DnsServer(table, [])
    await srv.start("127.0.0.1", 0)
    try:
        assert (await udp(srv, "example.test")).rcode() == dns.rcode.SERVFAIL
    finally:
        await srv.stop()


async def test_random_bytes_flood_is_dropped_and_counted(server: DnsServer) -> None:
    rng = random.Random(99)
    valid = dns.message.make_query("web.foobar.overnet", "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for batch in range(25):  # in batches, so the kernel's receive buffer never overflows
            for i in range(20):
                if i % 2:
                    wire = rng.randbytes(rng.randrange(0, 200))
                else:
                    wire = bytearray(valid)
                    wire[2] |= 0x80  # QR set: a response, never answered
                    wire[rng.randrange(3, len(wire))] = rng.randrange(256)
                sock.sendto(bytes(wire), server.address)
            await wait_for_stat(server, "malformed", 20 * (batch + 1))
    assert ips(await udp(server, "web")) == ["10.0.0.2"]
    assert server.stats["malformed"] == 500
    assert server.stats["errors"] == 0 and server.stats["answered"] == 1


async def wait_for_stat(server: DnsServer, key: str, value: int) -> None:
    for _ in range(500):
        if server.stats[key] >= value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"stats[{key!r}] is {server.stats[key]}, want {value}")


async def test_tcp_garbage_closes_that_connection_only(server: DnsServer) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"\x00\x05hello")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by the server
    writer.close()
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"\x00\x10abc")  # a short message, then the client hangs up
    writer.close()
    assert ips(await tcp(server, "web")) == ["10.0.0.2"]
    assert server.stats["malformed"] == 1


async def test_tcp_connection_carries_several_queries(server: DnsServer) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        for name in ("web", "example.test", "nope.overnet"):
            wire = dns.message.make_query(name, "A").to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
        rcodes = []
        for _ in range(3):
            size = int.from_bytes(await reader.readexactly(2), "big")
            rcodes.append(dns.message.from_wire(await reader.readexactly(size)).rcode())
        assert rcodes == [dns.rcode.NOERROR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN]
    finally:
        writer.close()


async def test_failing_table_provider_gives_servfail(upstream: FakeUpstream) -> None:
    def broken() -> NameTable:
        raise RuntimeError("no table")

    srv = DnsServer(broken, [upstream.address])
    await srv.start("127.0.0.1", 0)
    try:
        assert (await udp(srv, "web")).rcode() == dns.rcode.SERVFAIL
        assert srv.stats["servfail"] == 1 and srv.stats["errors"] == 1
    finally:
        await srv.stop()


async def test_stop_releases_the_port_and_is_idempotent(server: DnsServer) -> None:
    address = server.address
    await server.stop()
    await server.stop()
    again = DnsServer(table, [])
    await again.start(*address)  # same UDP and TCP port: nothing kept them
    try:
        assert ips(await tcp(again, "web")) == ["10.0.0.2"]
    finally:
        await again.stop()


async def test_stop_ends_open_tcp_connections(server: DnsServer) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    await asyncio.sleep(0.05)  # the server has accepted it
    await asyncio.wait_for(server.stop(), 5.0)
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()


async def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        DnsServer(table, ["nonsense"])
    with pytest.raises(ValueError, match="timeout"):
        DnsServer(table, [], timeout=0)
    srv = DnsServer(table, [])
    with pytest.raises(OSError, match="192.0.2.1 port 0"):
        await srv.start("192.0.2.1", 0)  # not an address of this host
    await srv.start("127.0.0.1", 0)
    try:
        with pytest.raises(RuntimeError, match="already listening"):
            await srv.start("127.0.0.1", 0)
    finally:
        await srv.stop()
