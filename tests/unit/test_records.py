"""Record validation (one record alone) and the safe key parsers."""

import logging

import pytest

from overnet.store import keys
from overnet.store.records import (BadRecord, BlockRecord, EndpointRecord, HostRecord,
                                   NetworkRecord, ServiceRecord, VniClaim, decode)

NET_ID = "ab" * 32
EP = dict(id="e" * 64, network=NET_ID, container="c" * 64, name="web", host="net-1",
          host_address="192.168.33.11", ip="10.0.0.2", mac="02:42:0a:00:00:02")


def test_good_endpoint_with_new_fields_round_trips():
    rec = EndpointRecord.from_dict({**EP, "aliases": ["www", "Web_2"], "runtime": "cni",
                                    "ifname": "eth1"})
    assert EndpointRecord.from_json(rec.to_json()) == rec
    old = EndpointRecord.from_dict(EP)   # written by an older agent: no runtime, no ifname
    assert (old.runtime, old.ifname) == ("", "")


@pytest.mark.parametrize("field, value, message", [
    ("host_address", "0.0.0.0", "not a unicast"),
    ("host_address", "127.0.0.1", "not a unicast"),
    ("host_address", "255.255.255.255", "not a unicast"),
    ("host_address", "224.0.0.1", "not a unicast"),
    ("host_address", "169.254.1.1", "not a unicast"),
    ("host_address", "0.1.2.3", "not a unicast"),
    ("host_address", "host", "bad IPv4"),
    ("ip", "10.0.0.300", "bad IPv4"),
    ("ip", "239.1.1.1", "not a unicast"),
    ("mac", "zz", "bad MAC"),
    ("mac", "03:42:0a:00:00:02", "not a unicast"),
    ("mac", "ff:ff:ff:ff:ff:ff", "not a unicast"),
    ("mac", "00:00:00:00:00:00", "not a unicast"),
    ("mac", "02:42:0a:00:00:02\n", "bad MAC"),
    ("name", "x" * 1_000_000, "not a name"),
    ("name", "a.b", "not a name"),
    ("name", "/web", "not a name"),
    ("name", "-web", "not a name"),
    ("aliases", ["ok", "no.dots"], "not a name"),
    ("aliases", [5], "not a name"),
    ("aliases", [f"a{i}" for i in range(17)], "at most 16"),
    ("network", "n1", "bad network id"),
    ("id", "../x", "bad endpoint id"),
    ("container", "a/b", "bad container id"),
    ("host", "", "bad host name"),
    ("runtime", "rkt", "unknown runtime"),
    ("ifname", "x" * 16, "bad interface name"),
    ("ifname", "eth/0", "bad interface name"),
])
def test_bad_endpoints(field, value, message):
    with pytest.raises(BadRecord, match=message):
        EndpointRecord.from_dict({**EP, field: value})


def test_endpoint_without_a_name_is_fine():
    assert EndpointRecord.from_dict({**EP, "name": ""}).name == ""


@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.1",
                                     "240.0.0.1"])
def test_host_records_need_a_unicast_address(address):
    with pytest.raises(BadRecord, match="not a unicast"):
        HostRecord.from_dict({"name": "net-1", "address": address})
    assert HostRecord.from_dict({"name": "net-1.example.com", "address": "10.1.1.1"}).mtu == 1500


def test_other_records():
    with pytest.raises(BadRecord, match="MTU"):
        HostRecord.from_dict({"name": "h", "address": "10.1.1.1", "mtu": 0})
    with pytest.raises(BadRecord, match="finite"):
        HostRecord.from_json(b'{"name": "h", "address": "10.1.1.1", "started": 1e999}')
    with pytest.raises(BadRecord, match="host name"):
        BlockRecord.from_dict({"host": "a/b"})
    with pytest.raises(BadRecord, match="network id"):
        VniClaim.from_dict({"network": "x"})
    with pytest.raises(BadRecord, match="network name"):
        NetworkRecord.from_dict({"id": NET_ID, "name": "a.b", "driver": "overlay",
                                 "subnet": "10.0.0.0/24", "gateway": "10.0.0.1"})
    with pytest.raises(BadRecord, match="service name"):
        ServiceRecord.from_dict({"id": "s", "name": "", "network": NET_ID, "network_name": "n",
                                 "container": "c", "endpoint": "e", "host": "h"})


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"\xff\xfe\x00", b'{"id": 1e999}', b"9" * 5000,
                                 b'"\\ud800"', b""])
def test_decode_never_raises(raw, caplog):
    with caplog.at_level(logging.WARNING):
        assert decode(EndpointRecord, "/k", raw) is None


def test_parse_vni_key():
    assert keys.parse_vni_key(keys.vni(256)) == 256
    assert keys.parse_vni_key("4096") == 4096


@pytest.mark.parametrize("bad", ["abc", "", "0", "-1", "+5", " 12", "1_0", "٣", "16777216",
                                 "0256", "/overnet/v1/vnis/x"])
def test_bad_vni_keys_are_skipped_and_logged_once(bad, caplog):
    with caplog.at_level(logging.WARNING):
        assert keys.parse_vni_key(bad) is None
        assert keys.parse_vni_key(bad) is None
    assert len([r for r in caplog.records if "bad store key" in r.getMessage()]) <= 1


def test_try_parse_cidr_key():
    assert str(keys.try_parse_cidr_key("10.1.5.0-24")) == "10.1.5.0/24"
    for bad in ["10.1.5.1-24", "10.1.5.0-33", "10.1.5.0/24", "x", "", "10.1.5.0-024",
                "010.1.5.0-24", "10.1.5.0-", "٣.1.5.0-24", "10.1.5.0-24\n"]:
        assert keys.try_parse_cidr_key(bad) is None, bad
