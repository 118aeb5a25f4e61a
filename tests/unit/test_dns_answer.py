"""Answer construction from a NameTable: what goes on the wire for each kind of query."""

import random

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import pytest

from overnet.dns import Entry, NameTable
from overnet.dns.answer import (
    encode,
    error_response,
    local_answer,
    parse_query,
    udp_limit,
)

TABLE = NameTable.build("foobar", "overnet", [
    Entry("web", "10.0.0.2", ("www",)),
    Entry("api-1", "10.0.0.4", ("api",)),
    Entry("api-2", "10.0.0.5", ("api",)),
    Entry("dual", "10.0.0.6"),
    Entry("dual-v6", "fd00::6", ("dual",)),
], subnet="10.0.0.0/24")


def ask(qname: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    """A query as a client sends it, through the wire and back."""
    query = dns.message.make_query(qname, rdtype, **kw)
    parsed = parse_query(query.to_wire())
    assert parsed is not None
    return parsed


def decide(query: dns.message.Message) -> tuple[str, dns.message.Message] | None:
    decided = local_answer(TABLE, query)
    if decided is not None:  # every local answer must survive a wire round trip
        dns.message.from_wire(encode(decided[1]))
    return decided


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in response.answer for rd in rrset]


@pytest.mark.parametrize("qname", ["web", "web.foobar.", "WeB.FooBar.OverNet.", "www.overnet"])
def test_a_record(qname: str) -> None:
    query = ask(qname)
    result, response = decide(query)
    assert result == "answered"
    assert response.rcode() == dns.rcode.NOERROR
    assert response.id == query.id
    assert response.flags & dns.flags.QR and response.flags & dns.flags.AA
    assert response.flags & dns.flags.RA and response.flags & dns.flags.RD
    assert addresses(response) == ["10.0.0.2"]
    rrset = response.answer[0]
    assert rrset.name == query.question[0].name  # case kept as asked (0x20 clients)
    assert rrset.ttl <= 10


def test_several_addresses() -> None:
    _, response = decide(ask("api"))
    assert sorted(addresses(response)) == ["10.0.0.4", "10.0.0.5"]


def test_aaaa_of_a_v4_only_name_is_empty_noerror() -> None:
    result, response = decide(ask("web.foobar.overnet", "AAAA"))
    assert (result, response.rcode(), response.answer) == ("answered", dns.rcode.NOERROR, [])


def test_aaaa_and_any_with_v6_entries() -> None:
    _, response = decide(ask("dual", "AAAA"))
    assert addresses(response) == ["fd00::6"]
    _, response = decide(ask("dual", "A"))
    assert addresses(response) == ["10.0.0.6"]
    _, response = decide(ask("dual", "ANY"))
    assert sorted(addresses(response)) == ["10.0.0.6", "fd00::6"]


def test_other_types_of_a_known_name_are_empty() -> None:
    for rdtype in ("MX", "TXT", "SRV"):
        result, response = decide(ask("web", rdtype))
        assert (result, response.rcode(), response.answer) == ("answered", 0, [])


def test_unknown_name_in_the_cluster_domain_is_nxdomain() -> None:
    for qname in ("nope.foobar.overnet.", "NOPE.overnet", "web.other.overnet"):
        result, response = decide(ask(qname))
        assert result == "nxdomain"
        assert response.rcode() == dns.rcode.NXDOMAIN and not response.answer


def test_domain_and_network_names_exist_without_records() -> None:
    for qname in ("overnet.", "foobar.overnet"):
        result, response = decide(ask(qname))
        assert (result, response.rcode(), response.answer) == ("answered", 0, [])


@pytest.mark.parametrize("qname", ["example.com", "nope", "web.foobar.example.com", "foobar"])
def test_other_names_are_forwarded(qname: str) -> None:
    assert decide(ask(qname)) is None


def test_ptr_of_a_known_address() -> None:
    query = ask(dns.reversename.from_address("10.0.0.5").to_text(), "PTR")
    result, response = decide(query)
    assert result == "answered"
    assert [rd.to_text() for rd in response.answer[0]] == ["api-2.foobar.overnet."]


def test_ptr_of_a_v6_address() -> None:
    _, response = decide(ask(dns.reversename.from_address("fd00::6").to_text(), "PTR"))
    assert [rd.to_text() for rd in response.answer[0]] == ["dual-v6.foobar.overnet."]


def test_ptr_unknown_in_subnet_is_nxdomain_and_outside_is_forwarded() -> None:
    result, response = decide(ask("99.0.0.10.in-addr.arpa.", "PTR"))
    assert (result, response.rcode()) == ("nxdomain", dns.rcode.NXDOMAIN)
    assert decide(ask("1.2.0.192.in-addr.arpa", "PTR")) is None
    assert decide(ask("0.0.10.in-addr.arpa", "PTR")) is None  # a zone, not an address


def test_non_query_opcode_is_notimp() -> None:
    query = dns.message.make_query("web", "A")
    query.set_opcode(dns.opcode.STATUS)
    result, response = local_answer(TABLE, parse_query(query.to_wire()))
    assert (result, response.rcode()) == ("notimp", dns.rcode.NOTIMP)


def test_other_classes_are_forwarded() -> None:
    assert decide(ask("version.bind", "TXT", rdclass=dns.rdataclass.CH)) is None


def test_servfail_response() -> None:
    query = ask("example.com")
    response = error_response(query, dns.rcode.SERVFAIL)
    assert response.rcode() == dns.rcode.SERVFAIL and response.id == query.id


def test_edns_is_echoed_and_sets_the_udp_limit() -> None:
    query = ask("web", use_edns=0, payload=1232)
    assert udp_limit(query) == 1232
    _, response = decide(query)
    assert response.edns == 0
    assert udp_limit(ask("web")) == 512
    assert udp_limit(ask("web", use_edns=0, payload=100)) == 512


def test_large_answer_is_truncated_with_tc_for_udp() -> None:
    many = [Entry(f"n{i}", f"10.0.{i // 250}.{i % 250 + 1}", ("many",)) for i in range(100)]
    table = NameTable.build("foobar", "overnet", many)
    _, response = local_answer(table, ask("many.foobar.overnet"))
    small = encode(response, 512)
    assert len(small) <= 512
    assert dns.message.from_wire(small, raise_on_truncation=False).flags & dns.flags.TC
    full = dns.message.from_wire(encode(response))
    assert not full.flags & dns.flags.TC and len(addresses(full)) == 100


def test_malformed_inputs_are_rejected() -> None:
    assert parse_query(b"") is None
    assert parse_query(b"\x00" * 11) is None
    response = dns.message.make_response(dns.message.make_query("web", "A"))
    assert parse_query(response.to_wire()) is None  # a response, not a query
    empty = dns.message.Message()
    assert parse_query(empty.to_wire()) is None  # no question


def test_random_bytes_never_raise() -> None:
    rng = random.Random(1234)
    valid = dns.message.make_query("web.foobar.overnet", "A").to_wire()
    for _ in range(3000):
        if rng.random() < 0.5:
            wire = rng.randbytes(rng.randrange(0, 300))
        else:  # a valid query with a few bytes flipped: reaches deeper into the parser
            wire = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                wire[rng.randrange(len(wire))] = rng.randrange(256)
            wire = bytes(wire)
        query = parse_query(wire)
        if query is not None:
            decided = local_answer(TABLE, query)
            if decided is not None:
                encode(decided[1])


def test_reply_cache_keys_on_the_query_after_its_id_and_on_the_table() -> None:
    from overnet.dns.cache import ReplyCache

    cache = ReplyCache(size=2)
    other = NameTable.build("foobar", "overnet", [])
    q1 = b"\x00\x01" + b"question-one"
    assert cache.get(TABLE, q1, 0) is None
    cache.put(TABLE, q1, 0, "answered", b"\x00\x01" + b"reply-one")
    assert cache.get(TABLE, b"\x12\x34question-one", 0) == ("answered", b"\x12\x34reply-one")
    assert cache.get(TABLE, q1, 65535) is None  # another size limit, another reply
    cache.put(other, b"\x00\x02q", 0, "answered", b"\x00\x02r")  # made for a stale table
    assert len(cache) == 1
    cache.put(TABLE, b"\x00\x02q2", 0, "nxdomain", b"\x00\x02r2")
    cache.put(TABLE, b"\x00\x03q3", 0, "nxdomain", b"\x00\x03r3")  # full: starts over
    assert len(cache) == 1
    assert cache.get(other, b"\x00\x03q3", 0) is None  # a new table empties it
    assert len(cache) == 0
