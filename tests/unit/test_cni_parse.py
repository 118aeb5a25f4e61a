"""overnet-cni without an agent: environment, config, versions, result shapes, flannel's
delegate config, pending-DEL files."""

from __future__ import annotations

import json
import os

import pytest

from overnet.cni import flannel, pending
from overnet.cni.config import OvernetConf, decode, valid_attachments
from overnet.cni.env import parse_args, parse_env
from overnet.cni.main import run
from overnet.cni.result import add_result, chain, result_address
from overnet.cni.spec import VERSIONS, CniError

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee1234567890", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
ENDPOINT = {"host_ifname": "veth1234567", "ip": "10.0.0.2", "prefixlen": 24,
            "mac": "02:42:0a:00:00:02", "gateway": "10.0.0.1", "mtu": 1450,
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
            "dns": {"nameservers": ["10.0.0.1"], "search": ["foobar.overnet"],
                    "domain": "overnet"}}


def code_of(env: dict, conf: dict | bytes | None = None) -> int:
    data = conf if isinstance(conf, bytes) else json.dumps(conf or {}).encode()
    with pytest.raises(CniError) as err:
        run(env, data, ["1.1.0"])
    return err.value.code


# --- environment ---------------------------------------------------------------------------

@pytest.mark.parametrize("env,code,word", [
    ({}, 4, "CNI_COMMAND"),
    ({"CNI_COMMAND": "FROB"}, 4, "FROB"),
    (dict(ENV, CNI_NETNS=""), 4, "CNI_NETNS"),
    (dict(ENV, CNI_CONTAINERID="", CNI_IFNAME=""), 4, "CNI_CONTAINERID,CNI_IFNAME"),
    (dict(ENV, CNI_CONTAINERID="-bad"), 4, "-bad"),
    (dict(ENV, CNI_CONTAINERID="a/b"), 4, "a/b"),
    (dict(ENV, CNI_IFNAME="a" * 16), 4, "a" * 16),
    (dict(ENV, CNI_IFNAME="et/h0"), 4, "et/h0"),
    (dict(ENV, CNI_ARGS="FOO=1"), 4, "FOO"),
    (dict(ENV, CNI_ARGS="novalue"), 4, "novalue"),
])
def test_bad_environment_is_code_4_naming_the_value(env, code, word):
    with pytest.raises(CniError) as err:
        parse_env(env)
    assert err.value.code == code
    assert word in err.value.msg


def test_del_needs_no_netns_and_keeps_the_path():
    inv = parse_env(dict(ENV, CNI_COMMAND="DEL", CNI_NETNS="", CNI_PATH="/a:/b"))
    assert (inv.command, inv.netns, inv.path) == ("DEL", "", ["/a", "/b"])


def test_gc_status_version_need_no_container():
    for verb in ("GC", "STATUS", "VERSION"):
        assert parse_env({"CNI_COMMAND": verb}).command == verb


def test_cni_args():
    assert parse_args("IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar;") == {
        "IgnoreUnknown": "1", "K8S_POD_NAME": "web", "FOO": "bar"}
    assert parse_args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=a=b")["K8S_POD_NAME"] == "a=b"
    assert parse_args("IgnoreUnknown=true;X=1") and parse_args("") == {}


# --- configuration -------------------------------------------------------------------------

@pytest.mark.parametrize("stdin,code", [
    (b"{not json", 6),
    (b"[1, 2]", 6),
    (json.dumps({"cniVersion": "1.0.0", "type": "overnet-cni"}).encode(), 7),
    (json.dumps({"cniVersion": "1.0.0", "name": "a b", "type": "x"}).encode(), 7),
    (json.dumps({"cniVersion": "0.2.0", "name": "n", "type": "x"}).encode(), 1),
    (json.dumps({"cniVersion": "2.0.0", "name": "n", "type": "x"}).encode(), 1),
    (json.dumps({"name": "n", "type": "x"}).encode(), 1),
    (json.dumps({"cniVersion": "one", "name": "n", "type": "x"}).encode(), 6),
    (json.dumps({"cniVersion": "1.0.0", "name": "n", "agentSocket": "rel.sock"}).encode(), 7),
    (json.dumps({"cniVersion": "1.0.0", "name": "n", "network": 5}).encode(), 7),
    (json.dumps({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": []}).encode(), 7),
])
def test_bad_config(stdin, code):
    assert code_of(ENV, stdin) == code


@pytest.mark.parametrize("verb,version", [("CHECK", "0.3.1"), ("CHECK", "0.3.0"),
                                          ("GC", "1.0.0"), ("STATUS", "0.4.0")])
def test_verbs_newer_than_the_config_are_code_1(verb, version):
    env = dict(ENV, CNI_COMMAND=verb)
    assert code_of(env, {"cniVersion": version, "name": "n", "type": "overnet-cni"}) == 1


def test_config_defaults_and_overrides():
    conf = OvernetConf(decode(b'{"cniVersion": "0.4.0", "name": "foobar"}'))
    assert (conf.network, conf.socket, conf.pending_dir, conf.prev_result) == (
        "foobar", "/run/overnet/overnet.sock", "/run/overnet/cni-pending", None)
    conf = OvernetConf({"cniVersion": "1.1.0", "name": "n", "network": "other",
                        "agentSocket": "/tmp/x/a.sock", "prevResult": {"ips": []}})
    assert (conf.network, conf.socket, conf.pending_dir, conf.prev_result) == (
        "other", "/tmp/x/a.sock", "/tmp/x/cni-pending", {"ips": []})


def test_valid_attachments():
    conf = {"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}
    assert valid_attachments(conf) == {("a", "eth0")}
    with pytest.raises(CniError) as err:
        valid_attachments({"cni.dev/valid-attachments": [{"containerID": "a"}]})
    assert err.value.code == 7


@pytest.mark.parametrize("stdin,expect", [(b"", "1.1.0"), (b'{"cniVersion": "0.4.0"}', "0.4.0"),
                                          (b'{"cniVersion": "9.9.9"}', "1.1.0")])
def test_version_verb(stdin, expect):
    out = run({"CNI_COMMAND": "VERSION"}, stdin, ["1.1.0"])
    assert out == {"cniVersion": expect, "supportedVersions": list(VERSIONS)}
    assert {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} == set(VERSIONS)


# --- results -------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_per_version(version):
    res = add_result(ENDPOINT, "eth0", "/run/netns/x", version)
    assert res["cniVersion"] == version
    host, cont = res["interfaces"]
    assert host["name"] == "veth1234567" and "sandbox" not in host
    assert cont == dict({"name": "eth0", "mac": "02:42:0a:00:00:02", "sandbox": "/run/netns/x"},
                        **({"mtu": 1450} if version == "1.1.0" else {}))
    ip = {"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 1}
    if version < "1.0.0":
        ip["version"] = "4"
    assert res["ips"] == [ip]
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]
    assert res["dns"] == {"nameservers": ["10.0.0.1"], "search": ["foobar.overnet"],
                          "domain": "overnet"}
    assert result_address(res, "eth0", "/run/netns/x") == "10.0.0.2"
    assert result_address(res, "eth1", "/run/netns/x") is None


def test_prev_result_is_kept_and_extended():
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/x"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            "dns": {"nameservers": ["1.1.1.1"]}}
    res = chain(prev, add_result(ENDPOINT, "eth0", "/run/netns/x", "1.0.0"))
    assert [i["name"] for i in res["interfaces"]] == ["lo", "veth1234567", "eth0"]
    assert [ip["interface"] for ip in res["ips"]] == [0, 2]
    assert res["dns"] == {"nameservers": ["1.1.1.1"]}
    assert chain(None, {"x": 1}) == {"x": 1}


# --- flannel's delegate config ---------------------------------------------------------------

def write_env(tmp_path, text: str) -> str:
    path = tmp_path / "subnet.env"
    path.write_text(text)
    return str(path)


FLANNEL_ENV = ("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\n"
               "FLANNEL_IPMASQ=true\n")


def test_subnet_env(tmp_path):
    env = flannel.load_subnet_env(write_env(tmp_path, FLANNEL_ENV))
    assert (env.networks, env.subnet, env.mtu, env.ipmasq) == (
        ["10.1.0.0/16"], "10.1.17.0/24", 1472, True)


@pytest.mark.parametrize("text,code,word", [
    ("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n", 6, "FLANNEL_SUBNET"),
    (FLANNEL_ENV.replace("1472", "big"), 6, "FLANNEL_MTU"),
    (FLANNEL_ENV.replace("10.1.17.1/24", "10.1.300.1/24"), 6, "10.1.300.1/24"),
])
def test_bad_subnet_env(tmp_path, text, code, word):
    with pytest.raises(CniError) as err:
        flannel.load_subnet_env(write_env(tmp_path, text))
    assert err.value.code == code and word in err.value.msg


def test_missing_subnet_env_is_try_again_later(tmp_path):
    with pytest.raises(CniError) as err:
        flannel.load_subnet_env(str(tmp_path / "nope.env"))
    assert err.value.code == 11


def test_delegate_defaults_like_flannel(tmp_path):
    env = flannel.load_subnet_env(write_env(tmp_path, FLANNEL_ENV))
    conf = {"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel"}
    assert flannel.delegate_config(conf, env) == {
        "name": "cbr0", "type": "bridge", "ipMasq": False, "mtu": 1472, "isGateway": True,
        "cniVersion": "0.3.1",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.17.0/24"}]],
                 "routes": [{"dst": "10.1.0.0/16"}]}}


def test_delegate_fields_win(tmp_path):
    env = flannel.load_subnet_env(write_env(tmp_path, FLANNEL_ENV.replace("true", "false")))
    conf = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
            "delegate": {"hairpinMode": True, "isDefaultGateway": True, "mtu": 1400,
                         "bridge": "mynet0"},
            "ipam": {"routes": [{"dst": "192.168.0.0/24"}]},
            "runtimeConfig": {"portMappings": []}}
    d = flannel.delegate_config(conf, env)
    assert (d["mtu"], d["ipMasq"], d["isDefaultGateway"], d["bridge"], d["hairpinMode"]) == (
        1400, True, True, "mynet0", True)
    assert d["ipam"]["routes"] == [{"dst": "192.168.0.0/24"}, {"dst": "10.1.0.0/16"}]
    assert d["runtimeConfig"] == {"portMappings": []}
    ipvlan = flannel.delegate_config(dict(conf, delegate={"type": "ipvlan"}), env)
    assert ipvlan["type"] == "ipvlan" and "isGateway" not in ipvlan


@pytest.mark.parametrize("delegate", [{"name": "x"}, {"ipam": {}}, {"type": 5}])
def test_delegate_rejects_what_flannel_sets(tmp_path, delegate):
    env = flannel.load_subnet_env(write_env(tmp_path, FLANNEL_ENV))
    with pytest.raises(CniError) as err:
        flannel.delegate_config({"name": "n", "delegate": delegate}, env)
    assert err.value.code == 7


def test_flannel_del_without_saved_config_succeeds(tmp_path):
    env = dict(ENV, CNI_COMMAND="DEL")
    conf = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
            "dataDir": str(tmp_path / "data"), "subnetFile": str(tmp_path / "none.env")}
    assert run(env, json.dumps(conf).encode(), ["1.0.0"]) is None


# --- pending DELs --------------------------------------------------------------------------

def test_pending_files(tmp_path):
    d = str(tmp_path / "pending")
    assert pending.entries(d) == []
    pending.remember(d, "c1", "eth0", "foobar")
    pending.remember(d, "c2", "we:ird", "foobar")
    pending.remember(d, "c1", "eth0", "foobar")  # the same DEL twice is one entry
    (tmp_path / "pending" / "junk.json").write_text("{")
    got = [(r["container_id"], r["ifname"]) for _, r in pending.entries(d)]
    assert sorted(got) == [("c1", "eth0"), ("c2", "we:ird")]
    assert all(os.path.basename(p).count("/") == 0 for p, _ in pending.entries(d))
    pending.forget(d, "c1", "eth0")
    pending.forget(d, "c1", "eth0")
    assert [r["container_id"] for _, r in pending.entries(d)] == ["c2"]


def test_flannel_check_needs_the_saved_config_and_names_route_gateways(tmp_path):
    env = dict(ENV, CNI_COMMAND="CHECK")
    conf = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
            "dataDir": str(tmp_path / "data")}
    assert code_of(env, conf) == 3
    res = {"ips": [{"address": "10.1.17.2/24", "gateway": "10.1.17.1"}],
           "routes": [{"dst": "10.1.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.1.17.254"},
                      {"dst": "fd00::/64"}]}
    assert flannel.routes_with_gateway(res)["routes"] == [
        {"dst": "10.1.0.0/16", "gw": "10.1.17.1"}, {"dst": "0.0.0.0/0", "gw": "10.1.17.254"},
        {"dst": "fd00::/64"}]


def test_flannel_gc_forwards_and_drops_only_its_own_stale_configs(tmp_path):
    """GC goes to the delegate with the valid attachments; saved configs of containers the
    runtime no longer lists are dropped, but only this network's (the dataDir is shared)."""
    data = tmp_path / "data"
    data.mkdir()
    for cid, net in (("keep", "cbr0"), ("stale", "cbr0"), ("othernet", "cbr1")):
        (data / cid).write_text(json.dumps({"name": net, "type": "bridge"}))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    seen = tmp_path / "seen.json"
    fake = bindir / "bridge"      # a delegate that records what it was given
    fake.write_text(f"#!/bin/sh\ncat > {seen}\n")
    fake.chmod(0o755)
    conf = {"cniVersion": "1.1.0", "name": "cbr0", "type": "flannel", "dataDir": str(data),
            "subnetFile": write_env(tmp_path, FLANNEL_ENV),
            "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    env = {"CNI_COMMAND": "GC", "CNI_PATH": str(bindir)}
    assert run(env, json.dumps(conf).encode(), ["1.1.0"]) is None
    assert sorted(os.listdir(data)) == ["keep", "othernet"]
    given = json.loads(seen.read_text())
    assert given["type"] == "bridge" and given["cni.dev/valid-attachments"] == [
        {"containerID": "keep", "ifname": "eth0"}]


async def test_the_agent_flushes_pending_dels_with_its_own_detach(tmp_path):
    d = str(tmp_path / "pending")
    for cid in ("a1", "a2", "a3"):
        pending.remember(d, cid, "eth0", "foobar")
    seen = []

    async def detach(cid: str, ifname: str) -> bool:
        if cid == "a3":
            raise RuntimeError("store down")
        seen.append((cid, ifname))
        return True

    with pytest.raises(RuntimeError):
        await pending.flush_pending_with(detach, d)
    assert seen == [("a1", "eth0"), ("a2", "eth0")]            # oldest first
    assert [r["container_id"] for _, r in pending.entries(d)] == ["a3"]
