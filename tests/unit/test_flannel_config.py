"""The network config: flannel's JSON, flannel's defaults, flannel's validation rules."""

from __future__ import annotations

import ipaddress
import json

import pytest

from overnet.flannel import config as fc


def parse(obj) -> fc.NetConfig:
    return fc.parse(json.dumps(obj))


VX = {"Type": "vxlan"}


def test_literal_flannel_config_with_defaults():
    cfg = fc.parse('{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}')
    assert cfg.network == ipaddress.IPv4Network("10.1.0.0/16")
    assert cfg.subnet_len == 24
    assert str(cfg.subnet_min) == "10.1.1.0"       # the first subnet is skipped
    assert str(cfg.subnet_max) == "10.1.255.0"
    assert (cfg.backend, cfg.vni, cfg.port) == ("vxlan", 1, 8472)


def test_literal_flannel_config_with_everything():
    cfg = fc.parse('{"Network": "172.16.0.0/16", "SubnetLen": 24, "SubnetMin": "172.16.1.0",'
                   '"SubnetMax": "172.16.20.0", "Backend": {"Type": "vxlan", "VNI": 7, '
                   '"Port": 4790}}')
    assert (str(cfg.subnet_min), str(cfg.subnet_max)) == ("172.16.1.0", "172.16.20.0")
    assert (cfg.vni, cfg.port) == (7, 4790)


def test_host_gw_and_round_trip():
    cfg = parse({"Network": "10.2.0.0/16", "SubnetLen": 26, "Backend": {"Type": "host-gw"}})
    assert cfg.backend == "host-gw" and cfg.mtu(1500) == 1500
    assert fc.parse(cfg.to_json()) == cfg
    assert cfg.to_dict()["Backend"] == {"Type": "host-gw"}
    vx = parse({"Network": "10.2.0.0/16", "Backend": VX})
    assert vx.mtu(1500) == 1450
    assert fc.parse(vx.to_json()) == vx
    assert vx.to_dict()["Backend"] == {"Type": "vxlan", "VNI": 1, "Port": 8472}


@pytest.mark.parametrize("network,expect", [
    ("10.0.0.0/8", 24), ("10.1.0.0/22", 24), ("10.1.0.0/23", 25), ("10.1.0.0/26", 28),
    ("10.1.0.0/28", 30)])
def test_default_subnet_len(network, expect):
    assert parse({"Network": network, "Backend": VX}).subnet_len == expect


def test_host_bits_are_masked_like_flannel():
    assert str(parse({"Network": "10.1.2.3/16", "Backend": VX}).network) == "10.1.0.0/16"


@pytest.mark.parametrize("obj,message", [
    ({"Backend": VX}, "Network"),
    ({"Network": "", "Backend": VX}, "Network"),
    ({"Network": "10.1.0.0", "Backend": VX}, "not an IPv4 CIDR"),
    ({"Network": "10.1.0.300/16", "Backend": VX}, "not an IPv4 CIDR"),
    ({"Network": "fd00::/64", "Backend": VX}, "not an IPv4 CIDR"),
    ({"Network": 42, "Backend": VX}, "not an IPv4 CIDR"),
    ({"Network": "10.1.0.0/29", "Backend": VX}, "too small"),
    ({"Network": "10.1.0.0/16", "SubnetLen": 31, "Backend": VX}, "less than /31"),
    ({"Network": "10.1.0.0/16", "SubnetLen": 17, "Backend": VX}, "at least four subnets"),
    ({"Network": "10.1.0.0/16", "SubnetLen": "24", "Backend": VX}, "integer"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "10.2.0.0", "Backend": VX},
     "SubnetMin is not in the range"),
    ({"Network": "10.1.0.0/16", "SubnetMax": "10.0.255.0", "Backend": VX},
     "SubnetMax is not in the range"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "10.1.1.5", "Backend": VX},
     "SubnetMin is not on a SubnetLen boundary"),
    ({"Network": "10.1.0.0/16", "SubnetMax": "10.1.9.128", "Backend": VX},
     "SubnetMax is not on a SubnetLen boundary"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "10.1.9.0", "SubnetMax": "10.1.3.0",
      "Backend": VX}, "above SubnetMax"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "nope", "Backend": VX}, "not an IPv4 address"),
    ({"Network": "10.1.0.0/16"}, "udp"),
    ({"Network": "10.1.0.0/16", "Backend": {"Type": "udp"}}, "not supported"),
    ({"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "VNI": 0}}, "VNI 0"),
    ({"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1 << 24}}, "VNI"),
    ({"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "Port": 70000}}, "Port"),
    ({"Network": "10.1.0.0/16", "Backend": "vxlan"}, "Backend must be"),
    ([], "JSON object"),
])
def test_rejected(obj, message):
    with pytest.raises(fc.ConfigError, match=message):
        parse(obj)


def test_not_json():
    with pytest.raises(fc.ConfigError, match="not JSON"):
        fc.parse(b"{Network")


def test_build_from_cli_arguments():
    cfg = fc.build("10.1.0.0/16", 26, "host-gw")
    assert (cfg.subnet_len, cfg.backend) == (26, "host-gw")
    assert str(cfg.subnet_min) == "10.1.0.64"
    with pytest.raises(fc.ConfigError, match="host bits"):
        fc.build("10.1.2.0/16")
    with pytest.raises(fc.ConfigError, match="less than /31"):
        fc.build("10.1.0.0/16", 31)


def test_compatible():
    cfg = parse({"Network": "10.1.0.0/16", "SubnetMax": "10.1.100.0", "Backend": VX})
    net = ipaddress.IPv4Network
    assert cfg.compatible(net("10.1.5.0/24"))
    assert not cfg.compatible(net("10.1.0.0/24"))       # below SubnetMin
    assert not cfg.compatible(net("10.1.101.0/24"))     # above SubnetMax
    assert not cfg.compatible(net("10.1.5.0/25"))       # other length
