"""NameTable and resolv.conf helpers: pure logic."""

import pytest

from overnet.dns import Entry, NameTable, parse_upstream, resolv_conf, upstreams_from_resolv_conf


@pytest.fixture
def table() -> NameTable:
    return NameTable.build("foobar", "overnet", [
        Entry("web", "10.0.0.2", ("www", "frontend")),
        Entry("db", "10.0.0.3"),
        Entry("api-1", "10.0.0.4", ("api",)),
        Entry("api-2", "10.0.0.5", ("api",)),
        Entry("six", "fd00::6"),
    ], subnet="10.0.0.0/24")


@pytest.mark.parametrize("qname", [
    "web", "web.foobar", "web.overnet", "web.foobar.overnet",
    "WEB", "Web.FooBar.Overnet.", "web.", "www.foobar.overnet", "frontend",
])
def test_every_form_of_a_name_resolves(table: NameTable, qname: str) -> None:
    assert table.addresses(qname) == ["10.0.0.2"]


def test_shared_name_has_every_address_in_order(table: NameTable) -> None:
    assert table.addresses("api.foobar.overnet") == ["10.0.0.4", "10.0.0.5"]


def test_unknown_names(table: NameTable) -> None:
    for qname in ("nope", "nope.foobar.overnet", "web.other.overnet", "example.com",
                  "web.foobar.overnet.example.com", "webx"):
        assert table.addresses(qname) is None, qname


def test_ipv6_address_kept(table: NameTable) -> None:
    assert table.addresses("six") == ["fd00::6"]


def test_ptr_gives_canonical_name_of_the_entry_not_an_alias(table: NameTable) -> None:
    assert table.ptr("10.0.0.2") == "web.foobar.overnet"
    assert table.ptr("10.0.0.5") == "api-2.foobar.overnet"
    assert table.ptr("fd00:0::6") == "six.foobar.overnet"
    assert table.ptr("10.0.0.99") is None
    assert table.ptr("not an ip") is None


def test_in_domain_decides_nxdomain_versus_forwarding(table: NameTable) -> None:
    for qname in ("overnet", "x.overnet", "X.FOOBAR.OVERNET.", "a.b.c.overnet"):
        assert table.in_domain(qname), qname
    for qname in ("x", "x.foobar", "example.com", "overnet.com", "xovernet"):
        assert not table.in_domain(qname), qname


def test_subnet_ownership_for_reverse_lookups(table: NameTable) -> None:
    assert table.owns_address("10.0.0.200")
    assert not table.owns_address("10.0.1.1")
    assert not table.owns_address("garbage")
    no_subnet = NameTable.build("n", "overnet", [])
    assert not no_subnet.owns_address("10.0.0.1")


def test_parents_exist_without_records(table: NameTable) -> None:
    assert table.is_parent("overnet.") and table.is_parent("FOOBAR.overnet")
    assert not table.is_parent("web.foobar.overnet")
    assert not table.is_parent("other.overnet")
    dotted = NameTable.build("n", "overnet", [Entry("a.b", "10.0.0.9")])
    assert dotted.addresses("a.b.n.overnet") == ["10.0.0.9"]
    assert dotted.is_parent("b.n.overnet")


def test_duplicate_address_in_one_name_listed_once() -> None:
    t = NameTable.build("n", "overnet", [Entry("a", "10.0.0.2", ("a",))])
    assert t.addresses("a") == ["10.0.0.2"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"entries": [Entry("web", "10.0.0.300")]}, "10.0.0.300"),
    ({"entries": [Entry("", "10.0.0.3")]}, "''"),
    ({"entries": [Entry("web", "10.0.0.3", ("a..b",))]}, "a..b"),
    ({"entries": [Entry("x" * 64, "10.0.0.3")]}, "x" * 64),
    ({"entries": [], "subnet": "10.0.0.0/33"}, "10.0.0.0/33"),
])
def test_bad_input_names_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        NameTable.build("foobar", "overnet", **kwargs)


def test_resolv_conf() -> None:
    text = resolv_conf("10.0.0.1", ["foobar.overnet"], ["ndots:0", "timeout:1"])
    assert text == ("nameserver 10.0.0.1\nsearch foobar.overnet\n"
                    "options ndots:0 timeout:1\n")
    assert resolv_conf("10.0.0.1", [], []) == "nameserver 10.0.0.1\n"


def test_upstreams_from_resolv_conf() -> None:
    text = """# comment
; also a comment
nameserver 127.0.0.53
nameserver   192.0.2.1 # trailing
search example.com
nameserver fe80::1%eth0
nameserver not-an-ip
nameserver 192.0.2.1
nameserver
options edns0
"""
    assert upstreams_from_resolv_conf(text) == ["127.0.0.53", "192.0.2.1", "fe80::1%eth0"]
    assert upstreams_from_resolv_conf("") == []


def test_parse_upstream() -> None:
    assert parse_upstream("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_upstream("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_upstream("2001:db8::1") == ("2001:db8::1", 53)
    assert parse_upstream("[2001:db8::1]:54") == ("2001:db8::1", 54)
    assert parse_upstream("[::1]") == ("::1", 53)
    for bad in ("dns.example", "1.2.3.4:0", "1.2.3.4:x", "[::1", "[::1]x", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match="upstream resolver"):
            parse_upstream(bad)


def test_a_networks_names_follow_its_endpoints_not_the_store_revision():
    """An endpoint and its service are written together and reach the agent's copy on two
    watches: a table built when only the service had arrived must not outlive the endpoint's
    arrival, though the copy's revision did not move (the agent's stub view: pure logic)."""
    from types import SimpleNamespace

    from overnet.agent.dns import NetworkDns
    from overnet.store import keys
    from overnet.store.records import NetworkRecord

    net = NetworkRecord(id="ab" * 32, name="n", driver="overlay", subnet="10.0.0.0/24",
                        gateway="10.0.0.1", vni=256)
    generations: dict[str, int] = {}
    found: list = []
    view = SimpleNamespace(endpoints=lambda net_id: found, services=lambda n: [],
                           mirror=SimpleNamespace(generation=lambda p: generations.get(p, 0)))
    names = NetworkDns(view, networks=None, upstreams=[])
    assert not names.table(net).addresses("own")
    found.append(SimpleNamespace(name="own", ip="10.0.0.5", aliases=(), id="e1"))
    generations[keys.endpoints(net.id)] = 1       # whatever the revision of the copy
    assert names.table(net).addresses("own") == ["10.0.0.5"]
    assert names.table(net) is names.table(net)              # unchanged: the same table
