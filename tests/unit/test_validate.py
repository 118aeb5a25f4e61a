"""Endpoint and host records checked against the cluster (store/validate.py)."""

import logging
import random

from overnet.store.records import EndpointRecord, HostRecord, NetworkRecord
from overnet.store.validate import admit_endpoints, admit_hosts

NET = NetworkRecord(id="ab" * 32, name="foobar", driver="overlay", subnet="10.0.0.0/24",
                    gateway="10.0.0.1", vni=256)
HOSTS = {"net-1": HostRecord(name="net-1", address="192.168.33.11"),
         "net-2": HostRecord(name="net-2", address="192.168.33.12")}


def ep(n: int, **kw) -> EndpointRecord:
    base = dict(id=f"{n:064x}", network=NET.id, container=f"c{n}", name=f"web{n}", host="net-1",
                host_address="192.168.33.11", ip=f"10.0.0.{n}", mac=f"02:42:0a:00:00:{n:02x}")
    return EndpointRecord(**{**base, **kw})


def cand(n: int, rev: int | None = None, **kw):
    return (f"/overnet/v1/endpoints/{NET.id}/{n}", rev if rev is not None else n, ep(n, **kw))


def test_good_endpoints_are_admitted_in_revision_order():
    good = [cand(3, 30), cand(2, 20, host="net-2", host_address="192.168.33.12")]
    admitted, rejected = admit_endpoints(NET, good, HOSTS)
    assert [e.ip for e in admitted] == ["10.0.0.2", "10.0.0.3"] and rejected == []


def test_vtep_must_be_the_live_hosts_address():
    bad = [cand(2, host_address="0.0.0.0"), cand(3, host_address="127.0.0.1"),
           cand(4, host_address="192.168.33.12"), cand(5, host="net-9"),
           cand(6, host_address="255.255.255.255"), cand(7, host_address="224.0.0.1")]
    admitted, rejected = admit_endpoints(NET, bad, HOSTS)
    assert admitted == []
    reasons = dict(rejected)
    assert "not the address of host 'net-1'" in reasons[bad[0][0]]
    assert "is not on the network" in reasons[bad[3][0]]


def test_ip_must_be_a_usable_address_of_the_subnet():
    bad = [cand(2, ip="10.9.0.2"), cand(3, ip="10.0.0.0"), cand(4, ip="10.0.0.255"),
           cand(5, ip="10.0.0.1")]
    admitted, rejected = admit_endpoints(NET, bad, HOSTS)
    assert admitted == [] and len(rejected) == 4
    assert "outside the network's subnet 10.0.0.0/24" in rejected[0][1]
    assert "gateway" in rejected[3][1]


def test_first_writer_keeps_ip_and_mac(caplog):
    owner = cand(2, 10)
    thief = cand(3, 11, ip="10.0.0.2")                       # same IP, another MAC: a hijack
    mac_thief = cand(4, 12, mac=owner[2].mac)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            admitted, rejected = admit_endpoints(NET, [mac_thief, thief, owner], HOSTS)
            assert admitted == [owner[2]]
            assert dict(rejected) == {
                thief[0]: f"ip 10.0.0.2 is already held by {owner[0]}",
                mac_thief[0]: f"MAC {owner[2].mac} is already held by {owner[0]}"}
    assert caplog.text.count("already held") == 2   # logged once, not on every pass


def test_a_rejected_claimant_takes_nothing():
    liar = cand(2, 1, host_address="10.10.10.10")            # rejected: its IP stays free
    honest = cand(3, 2, ip="10.0.0.2")
    admitted, _ = admit_endpoints(NET, [liar, honest], HOSTS)
    assert admitted == [honest[2]]


def test_wrong_network_is_rejected():
    admitted, rejected = admit_endpoints(NET, [cand(2, network="cd" * 32)], HOSTS)
    assert admitted == [] and "not " + NET.id in rejected[0][1]


def test_deterministic_whatever_the_input_order():
    rng = random.Random(7)
    cands = [cand(n, rng.randrange(5), ip=f"10.0.0.{rng.randrange(2, 9)}") for n in range(2, 40)]
    first = admit_endpoints(NET, cands, HOSTS)
    for _ in range(5):
        rng.shuffle(cands)
        assert admit_endpoints(NET, cands, HOSTS) == first


def test_admit_hosts():
    ok = ("/overnet/v1/hosts/net-1", 5, HostRecord(name="net-1", address="192.168.33.11"))
    twin = ("/overnet/v1/hosts/evil", 6, HostRecord(name="evil", address="192.168.33.11"))
    misplaced = ("/overnet/v1/hosts/net-3", 7, HostRecord(name="net-4", address="10.1.1.4"))
    admitted, rejected = admit_hosts([twin, misplaced, ok])
    assert admitted == {"net-1": ok[2]}
    assert dict(rejected) == {twin[0]: "address 192.168.33.11 is already host 'net-1''s",
                              misplaced[0]: "record names host 'net-4', not its key's"}
