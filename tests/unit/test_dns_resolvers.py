"""Resolvers: one DnsServer per network, synced level-triggered (on loopback, no root)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from overnet.dns import Entry, NameTable, Resolvers, ResolverSpec, host_upstreams


def table(network: str, ip: str) -> NameTable:
    return NameTable.build(network, "overnet", [Entry("web", ip)])


async def ask(where: tuple[str, int] | None, qname: str) -> dns.message.Message:
    assert where is not None
    query = dns.message.make_query(qname, "A")
    return await dns.asyncquery.udp(query, where[0], timeout=5.0, port=where[1])


def ips(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


@pytest.fixture
async def resolvers() -> AsyncIterator[Resolvers]:
    r = Resolvers([], port=0)
    yield r
    await r.close()


async def test_sync_starts_updates_and_stops(resolvers: Resolvers) -> None:
    errors = await resolvers.sync({
        "net-a": ResolverSpec("127.0.0.1", None, table("a", "10.0.0.2")),
        "net-b": ResolverSpec("127.0.0.1", None, table("b", "10.0.1.2")),
    })
    assert errors == {}
    a, b = resolvers.address("net-a"), resolvers.address("net-b")
    assert ips(await ask(a, "web.a")) == ["10.0.0.2"]
    assert ips(await ask(b, "web.b")) == ["10.0.1.2"]
    assert (await ask(a, "web.b.overnet")).rcode() == dns.rcode.NXDOMAIN

    await resolvers.sync({"net-a": ResolverSpec("127.0.0.1", None, table("a", "10.0.0.9"))})
    assert resolvers.address("net-a") == a  # same place: new table, no restart
    assert ips(await ask(a, "web.a")) == ["10.0.0.9"]
    assert resolvers.address("net-b") is None
    assert set(resolvers.stats()) == {"net-a"}
    assert resolvers.stats()["net-a"]["answered"] == 2


async def test_a_moved_address_restarts_the_resolver(resolvers: Resolvers) -> None:
    first = await resolvers.ensure("net-a", ResolverSpec("127.0.0.1", None, table("a", "10.0.0.2")))
    moved = await resolvers.ensure("net-a", ResolverSpec("127.0.0.2", None, table("a", "10.0.0.2")))
    assert moved[0] == "127.0.0.2" and resolvers.address("net-a") == moved
    assert ips(await ask(moved, "web")) == ["10.0.0.2"]
    assert first != moved


async def test_one_failing_network_does_not_hold_up_the_others(resolvers: Resolvers) -> None:
    errors = await resolvers.sync({
        "bad": ResolverSpec("192.0.2.1", None, table("bad", "10.0.0.2")),
        "good": ResolverSpec("127.0.0.1", None, table("good", "10.0.1.2")),
    })
    assert list(errors) == ["bad"] and "192.0.2.1" in errors["bad"]
    assert ips(await ask(resolvers.address("good"), "web")) == ["10.0.1.2"]
    assert resolvers.address("bad") is None
    assert await resolvers.remove("bad") is False


def test_bad_upstream_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="dns.example"):
        Resolvers(["192.0.2.53", "dns.example"])


def test_host_upstreams(tmp_path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.53\nnameserver 127.0.0.53\n")
    assert host_upstreams(str(conf)) == ["192.0.2.53", "127.0.0.53"]
    assert host_upstreams(str(tmp_path / "missing")) == []
