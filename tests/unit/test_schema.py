"""Key schema and records: round trips, validation, bad values skipped."""

import logging

import pytest

from overnet.store import keys
from overnet.store.records import (BadRecord, EndpointRecord, HostRecord, NetworkRecord, decode)

NET_ID = "ab" * 32


def test_keys_layout():
    assert keys.network(NET_ID) == f"/overnet/v1/networks/{NET_ID}"
    assert keys.block(NET_ID, "10.1.2.64/26") == f"/overnet/v1/blocks/{NET_ID}/10.1.2.64-26"
    assert keys.endpoint(NET_ID, "e1") == f"/overnet/v1/endpoints/{NET_ID}/e1"
    assert keys.host("net-1") == "/overnet/v1/hosts/net-1"
    assert keys.split(keys.endpoint(NET_ID, "e1")) == ("endpoints", NET_ID, "e1")
    assert keys.flannel_subnet("10.1.5.0/24") == "/coreos.com/network/subnets/10.1.5.0-24"
    assert keys.flannel_config("/x/net/") == "/x/net/config"


def test_cidr_key_round_trip():
    assert str(keys.parse_cidr_key(keys.cidr_key("10.1.5.0/24"))) == "10.1.5.0/24"


def test_split_rejects_foreign_key():
    with pytest.raises(ValueError):
        keys.split("/coreos.com/network/config")


def test_network_record_round_trip():
    rec = NetworkRecord(id=NET_ID, name="multihost", driver="overlay", subnet="10.128.0.0/16",
                        gateway="10.128.0.1", vni=256)
    assert NetworkRecord.from_json(rec.to_json()) == rec


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not JSON"),
    (b"[]", "JSON object"),
    (b'{"id": "x"}', "missing field"),
    (b'{"id": "' + b"ab" * 32 + b'", "name": "n", "driver": "overlay", "subnet": "10.0.0.0/33",'
     b' "gateway": "10.0.0.1"}', "bad CIDR"),
    (b'{"id": "' + b"ab" * 32 + b'", "name": "n", "driver": "overlay", "subnet": "10.0.0.0/16",'
     b' "gateway": "10.9.0.1"}', "not in subnet"),
    (b'{"id": "' + b"ab" * 32 + b'", "name": 5, "driver": "overlay", "subnet": "10.0.0.0/16",'
     b' "gateway": "10.0.0.1"}', "expected str"),
])
def test_bad_network_records(raw, message):
    with pytest.raises(BadRecord, match=message):
        NetworkRecord.from_json(raw)


def test_decode_logs_and_skips(caplog):
    with caplog.at_level(logging.WARNING):
        assert decode(HostRecord, "/overnet/v1/hosts/h", b"{oops") is None
    assert "/overnet/v1/hosts/h" in caplog.text


def test_endpoint_validation():
    ok = dict(id="e" * 64, network=NET_ID, container="c" * 64, name="a", host="h",
              host_address="192.168.33.11", ip="10.0.0.2", mac="02:42:0a:00:00:02")
    assert EndpointRecord.from_dict(ok).ip == "10.0.0.2"
    with pytest.raises(BadRecord, match="MAC"):
        EndpointRecord.from_dict({**ok, "mac": "zz"})
    with pytest.raises(BadRecord, match="ip"):
        EndpointRecord.from_dict({**ok, "ip": "10.0.0.300"})
