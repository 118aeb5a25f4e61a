"""overnet-cni against real agents in a two-host lab: ADD/CHECK/DEL per cniVersion, DEL
twice, ADD twice, DEL while the agent is stopped (kept, then finished), GC, STATUS, traffic
between containers of two hosts, and a chain with Debian's portmap. The plugin runs as a
runtime runs it: inside the host's namespaces, with only the CNI_* variables set.

`overnet-cni` is the compiled shim (the agent's POST /cni does the work); what it leaves to
the Python plugin beside it (agent away, VERSION, configs with escapes, bad input it does not
read) is tested here too, and the Python plugin on its own (`overnet-cni-python`)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

from overnet.cni import install as installer
from overnet.cni import pending
from overnet.sandbox.lab import _kill
from tests.labfixture import wait_until

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


class CniHost:
    """One lab host seen by a CNI runtime: the plugin, container namespaces in its /run."""

    def __init__(self, lab, name: str, root: str) -> None:
        self.lab, self.name, self.root = lab, name, root
        self.bin = os.path.join(root, "bin")
        self.made: list[str] = []

    def netns(self) -> tuple[str, str]:
        name = f"cni-{secrets.token_hex(4)}"
        proc = self.lab.run(self.name, ["ip", "netns", "add", name])
        assert proc.returncode == 0, proc.stderr
        self.made.append(name)
        return name, f"/run/netns/{name}"

    def cleanup(self) -> None:
        for name in self.made:
            self.lab.run(self.name, ["ip", "netns", "del", name])

    def plugin(self, verb: str, conf: dict | bytes, cid: str = "", netns: str = "",
               ifname: str = "eth0", exe: str = "overnet-cni", args: str = "",
               path: str = "", bindir: str = "") -> subprocess.CompletedProcess:
        env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_PATH": self.bin, "CNI_ARGS": args}
        if not verb:
            del env["CNI_COMMAND"]
        if path:
            env["PATH"] = path
        argv = self.lab.enter_argv(self.lab.host(self.name)) + [
            os.path.join(bindir or self.bin, exe)]
        stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        return subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=90,
                              check=False)

    def in_ns(self, ns_name: str, *cmd: str) -> subprocess.CompletedProcess:
        return self.lab.run(self.name, ["ip", "netns", "exec", ns_name, *cmd])

    def addresses(self, ns_name: str, ifname: str = "eth0") -> list[str]:
        proc = self.in_ns(ns_name, "ip", "-4", "-j", "addr", "show", "dev", ifname)
        if proc.returncode != 0:
            return []
        return [a["local"] for a in json.loads(proc.stdout)[0]["addr_info"]]


def ok(proc: subprocess.CompletedProcess) -> dict | None:
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def failed(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 1, (proc.stdout + proc.stderr).decode()
    err = json.loads(proc.stdout)
    assert set(err) == {"cniVersion", "code", "msg", "details"}
    return err


@pytest.fixture(scope="module")
def world(lab2):
    root = tempfile.mkdtemp(prefix="ovcni-lab-")
    bindir = os.path.join(root, "bin")
    os.makedirs(bindir)
    for plugin in ("portmap", "bandwidth"):
        os.symlink(f"/usr/lib/cni/{plugin}", os.path.join(bindir, plugin))
    installer.install([bindir], os.path.join(root, "net.d"), "cnitest", "1.0.0")
    net = f"cni{secrets.token_hex(2)}"
    lab2.api("net-1").post("/networks", {"name": net, "driver": "overlay"})
    hosts = {"a": CniHost(lab2, "net-1", root), "b": CniHost(lab2, "net-2", root)}
    try:
        yield lab2, hosts, net
    finally:
        for h in hosts.values():
            h.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def conf(net: str, version: str = "1.0.0", **extra) -> dict:
    """The plugin's config as a conflist member: the agent socket and the pending-DEL
    directory are the defaults, inside the lab host's own /run."""
    return dict({"cniVersion": version, "name": net, "type": "overnet-cni"}, **extra)


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del_each_version(world, version):
    lab, hosts, net = world
    a = hosts["a"]
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    res = ok(a.plugin("ADD", conf(net, version), cid, ns,
                      args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"))
    assert res["cniVersion"] == version
    address = res["ips"][0]["address"].split("/")[0]
    assert ("version" in res["ips"][0]) == (version < "1.0.0")
    # a macvlan of the network's vxlan0: the container's interface is the only one
    assert res["interfaces"] == [dict(
        {"name": "eth0", "mac": res["interfaces"][0]["mac"], "sandbox": ns},
        **({"mtu": 1450} if version == "1.1.0" else {}))]
    assert res["ips"][0]["interface"] == 0
    assert res["routes"][0]["dst"] == "0.0.0.0/0"
    assert res["dns"]["nameservers"] == [res["ips"][0]["gateway"]]
    assert a.addresses(ns_name) == [address]
    record = lab.api(a.name).get(f"/endpoints/{cid}/eth0")
    assert (record["ip"], record["runtime"], record["name"]) == (address, "cni", "web")
    if version >= "0.4.0":
        ok(a.plugin("CHECK", conf(net, version, prevResult=res), cid, ns))
    else:
        assert failed(a.plugin("CHECK", conf(net, version), cid, ns))["code"] == 1
    ok(a.plugin("DEL", conf(net, version, prevResult=res), cid, ns))
    assert a.addresses(ns_name) == []
    assert not [e for e in lab.api(a.name).get("/endpoints") if e["container_id"] == cid]
    ok(a.plugin("DEL", conf(net, version), cid, ns))          # twice
    ok(a.plugin("DEL", conf(net, version), cid, ""))          # netns gone: still fine
    if version >= "0.4.0":
        assert failed(a.plugin("CHECK", conf(net, version), cid, ns))["code"] == 3


def test_add_twice_is_an_error_with_one_address(world):
    _, hosts, net = world
    a = hosts["a"]
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    first = ok(a.plugin("ADD", conf(net), cid, ns))
    err = failed(a.plugin("ADD", conf(net), cid, ns))
    assert "already" in err["msg"]
    assert a.addresses(ns_name) == [first["ips"][0]["address"].split("/")[0]]
    ok(a.plugin("DEL", conf(net), cid, ns))


def test_bad_input_codes(world):
    _, hosts, net = world
    a = hosts["a"]
    _, ns = a.netns()
    assert failed(a.plugin("ADD", conf("nosuchnet"), "c1", ns))["code"] == 7
    assert failed(a.plugin("ADD", conf(net, "0.2.0"), "c1", ns))["code"] == 1
    assert failed(a.plugin("ADD", conf(net), "", ns))["code"] == 4
    away = conf(net, agentSocket="/run/overnet/nothing.sock")
    assert failed(a.plugin("ADD", away, "c1", ns))["code"] == 11
    status = conf(net, "1.1.0")
    assert ok(a.plugin("STATUS", status)) is None
    assert failed(a.plugin("STATUS", dict(status, agentSocket="/run/x.sock")))["code"] == 50


def test_containers_on_two_hosts_talk(world):
    _, hosts, net = world
    ends = []
    for h in ("a", "b"):
        ns_name, ns = hosts[h].netns()
        cid = secrets.token_hex(16)
        res = ok(hosts[h].plugin("ADD", conf(net), cid, ns))
        ends.append((h, ns_name, ns, cid, res["ips"][0]["address"].split("/")[0]))
    (ha, nsa, _, _, _), (_, _, _, _, ipb) = ends
    ping = hosts[ha].in_ns(nsa, "ping", "-c", "2", "-i", "0.2", "-W", "2", ipb)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    for h, _, ns, cid, _ in ends:
        ok(hosts[h].plugin("DEL", conf(net), cid, ns))


PATH = "/usr/sbin:/usr/bin:/sbin:/bin"   # portmap and bandwidth run iptables and tc
SERVE_ONCE = ("import socket; s = socket.socket(); s.settimeout(30); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', 80)); "
              "s.listen(); c, _ = s.accept(); c.sendall(b'hello from the container'); c.close()")
FETCH = ("import socket, sys, time\nfor _ in range(50):\n    try:\n"
         "        c = socket.create_connection((sys.argv[1], 18080), timeout=2); break\n"
         "    except OSError:\n        time.sleep(0.1)\nprint(c.recv(100).decode())")


def chained(a: CniHost, verb: str, plugin: str, prev: dict, net: str, cid: str, ns: str,
            runtime_config: dict) -> dict | None:
    conf = {"cniVersion": "1.0.0", "name": net, "type": plugin, "prevResult": prev,
            "runtimeConfig": runtime_config}
    return ok(a.plugin(verb, conf, cid, ns, exe=plugin, path=PATH))


PORTS = {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}
LIMITS = {"bandwidth": {"ingressRate": 8000000, "ingressBurst": 80000,
                        "egressRate": 8000000, "egressBurst": 80000}}


def test_chain_with_portmap_and_bandwidth_on_a_bridge_network(world):
    """overnet-cni first, then Debian's portmap and bandwidth, each fed the previous result:
    a connection to the host's mapped port reaches the container, its host-side veth is
    shaped."""
    lab, hosts, _ = world
    a = hosts["a"]
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    res = ok(a.plugin("ADD", conf("bridge", network="bridge"), cid, ns))
    out = chained(a, "ADD", "portmap", res, "bridge", cid, ns, PORTS)
    shaped = chained(a, "ADD", "bandwidth", out, "bridge", cid, ns, LIMITS)
    assert shaped["ips"] == res["ips"]
    assert shaped["interfaces"][:2] == res["interfaces"]   # + the ifb device bandwidth made
    host_veth = res["interfaces"][0]["name"]
    assert "tbf" in lab.run(a.name, ["tc", "qdisc", "show", "dev", host_veth]).stdout
    argv, env = lab.ssh_argv(a.name, ["ip", "netns", "exec", ns_name, sys.executable, "-c",
                                      SERVE_ONCE])
    server = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # from the host itself: the lab's agents leave ip_forward off, so a connection from
        # another host would stop at the FORWARD step, which is not the plugin's business
        got = lab.run(a.name, [sys.executable, "-c", FETCH, lab.host(a.name).address])
        assert got.stdout.strip() == "hello from the container", got.stderr
    finally:
        server.kill()
        server.wait()
    chained(a, "DEL", "bandwidth", out, "bridge", cid, ns, LIMITS)
    chained(a, "DEL", "portmap", res, "bridge", cid, ns, PORTS)
    ip = res["ips"][0]["address"].split("/")[0]
    assert f"{ip}:80" not in lab.run(a.name, ["iptables-save", "-t", "nat"]).stdout
    ok(a.plugin("DEL", conf("bridge", network="bridge"), cid, ns))


def test_chain_on_an_overlay_network(world):
    """On an overlay network the chain runs (portmap writes its rules, bandwidth without
    limits passes the result on); see the report for what the network namespace prevents."""
    lab, hosts, net = world
    a = hosts["a"]
    _, ns = a.netns()
    cid = secrets.token_hex(16)
    res = ok(a.plugin("ADD", conf(net), cid, ns))
    out = chained(a, "ADD", "portmap", res, net, cid, ns, PORTS)
    ip = res["ips"][0]["address"].split("/")[0]
    assert f"{ip}:80" in lab.run(a.name, ["iptables-save", "-t", "nat"]).stdout
    assert chained(a, "ADD", "bandwidth", out, net, cid, ns, {}) == out
    chained(a, "DEL", "bandwidth", out, net, cid, ns, {})
    chained(a, "DEL", "portmap", res, net, cid, ns, PORTS)
    ok(a.plugin("DEL", conf(net), cid, ns))


def test_del_while_the_agent_is_stopped_is_finished_later(world):
    lab, hosts, net = world
    a = hosts["a"]
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    ok(a.plugin("ADD", conf(net), cid, ns))
    host = lab.host(a.name)
    kept = os.path.join(host.run_dir, "overnet", "cni-pending")   # its /run, seen from here
    _kill(host.agent_pid)
    try:
        ok(a.plugin("DEL", conf(net), cid, ns))             # the runtime sees success
        assert [r["container_id"] for _, r in pending.entries(kept)] == [cid]
        assert failed(a.plugin("ADD", conf(net), "other", ns))["code"] == 11
    finally:
        lab._start_agent(host)
        lab._wait_agent(host)
    # the restarted agent finished the DEL before serving
    assert pending.entries(kept) == []
    assert cid not in {e["container_id"] for e in lab.api(a.name).get("/endpoints")}
    _, ns2 = a.netns()
    cid2 = secrets.token_hex(16)
    ok(a.plugin("ADD", conf(net), cid2, ns2))
    assert wait_until(lambda: a.addresses(ns_name) == [])
    ok(a.plugin("DEL", conf(net), cid2, ns2))


def test_gc_detaches_what_the_runtime_no_longer_lists(world):
    lab, hosts, net = world
    a = hosts["a"]
    cids = [secrets.token_hex(16) for _ in range(3)]
    for cid in cids:
        ok(a.plugin("ADD", conf(net, "1.1.0"), cid, a.netns()[1]))
    gc = conf(net, "1.1.0", **{"cni.dev/valid-attachments": [
        {"containerID": cids[0], "ifname": "eth0"}]})
    ok(a.plugin("GC", gc))
    left = {e["container_id"] for e in lab.api(a.name).get("/endpoints", runtime="cni")}
    assert cids[0] in left and not (set(cids[1:]) & left)
    ok(a.plugin("DEL", conf(net, "1.1.0"), cids[0], ""))


def test_del_after_the_container_is_gone(world):
    """The runtime may DEL after the namespace is gone: success, and the address released."""
    lab, hosts, net = world
    a = hosts["a"]
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    ok(a.plugin("ADD", conf(net), cid, ns))
    assert lab.run(a.name, ["ip", "netns", "del", ns_name]).returncode == 0
    ok(a.plugin("DEL", conf(net), cid, ns))
    assert cid not in {e["container_id"] for e in lab.api(a.name).get("/endpoints")}


def test_the_shim_does_every_verb_through_the_agent(world):
    """In a bin dir without the Python plugin, every verb but VERSION still works: the shim
    and the agent's POST /cni alone. Where it would hand over to Python, it says what is
    missing in the spec's error JSON."""
    lab, hosts, net = world
    a = hosts["a"]
    alone = os.path.join(a.root, f"alone-{secrets.token_hex(2)}")
    os.makedirs(alone)
    shutil.copy(os.path.join(a.bin, "overnet-cni"), alone)
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    v11 = conf(net, "1.1.0")
    res = ok(a.plugin("ADD", v11, cid, ns, bindir=alone, args="K8S_POD_NAME=Alone_1"))
    assert a.addresses(ns_name) == [res["ips"][0]["address"].split("/")[0]]
    assert res["interfaces"][res["ips"][0]["interface"]]["mtu"] > 0
    assert lab.api(a.name).get(f"/endpoints/{cid}/eth0")["name"] == "alone-1"
    ok(a.plugin("CHECK", dict(v11, prevResult=res), cid, ns, bindir=alone))
    assert ok(a.plugin("STATUS", v11, bindir=alone)) is None
    assert "already" in failed(a.plugin("ADD", v11, cid, ns, bindir=alone))["msg"]
    gc = dict(v11, **{"cni.dev/valid-attachments": [{"containerID": cid, "ifname": "eth0"}]})
    ok(a.plugin("GC", gc, bindir=alone))
    assert a.addresses(ns_name) != []
    ok(a.plugin("DEL", v11, cid, ns, bindir=alone))
    assert a.addresses(ns_name) == []
    assert failed(a.plugin("CHECK", v11, cid, ns, bindir=alone))["code"] == 3
    # what it leaves to Python: it says so, naming the missing plugin
    for verb, c in (("ADD", conf(net, agentSocket="/run/overnet/nothing.sock")),
                    ("VERSION", {})):
        err = failed(a.plugin(verb, c, cid, ns, bindir=alone))
        assert err["code"] == 999 and "overnet-cni-python" in err["details"], err


def test_the_python_plugin_alone(world):
    """overnet-cni-python (what the shim falls back to, and overnet-cni without a compiler)
    does ADD, CHECK, DEL through the agent's /endpoints API."""
    _, hosts, net = world
    a = hosts["a"]
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    py = "overnet-cni-python"
    res = ok(a.plugin("ADD", conf(net), cid, ns, exe=py))
    assert a.addresses(ns_name) == [res["ips"][0]["address"].split("/")[0]]
    ok(a.plugin("CHECK", conf(net, prevResult=res), cid, ns, exe=py))
    ok(a.plugin("DEL", conf(net), cid, ns, exe=py))
    assert a.addresses(ns_name) == []


def test_bad_input_through_the_shim(world):
    """Each answered with the spec's error JSON naming the bad value (by the agent, or by the
    Python plugin where the shim hands over)."""
    lab, hosts, net = world
    a = hosts["a"]
    _, ns = a.netns()
    err = failed(a.plugin("ADD", b'{"cniVersion": "1.0.0", "name": ', "c1", ns))
    assert err["code"] == 6 and "decoding" in err["msg"]
    err = failed(a.plugin("", conf(net), "c1", ns))
    assert err["code"] == 4 and "CNI_COMMAND" in err["msg"]
    err = failed(a.plugin("ADD", conf(net), "c1", ns, ifname="eth\r\n0"))
    assert err["code"] == 4 and "'eth\\r\\n0'" in err["msg"]
    err = failed(a.plugin("ADD", conf(net), "c1\nHost: x", ns))
    assert err["code"] == 4 and "'c1\\nHost: x'" in err["msg"]
    quoted = conf(net, agentSocket='/run/overnet/x"y.sock')
    err = failed(a.plugin("ADD", quoted, "c1", ns))
    assert err["code"] == 11 and 'x"y.sock' in err["details"], err
    err = failed(a.plugin("ADD", conf(net, agentSocket="run/overnet.sock"), "c1", ns))
    assert err["code"] == 7 and "'run/overnet.sock'" in err["msg"]
    # an escape the shim leaves to Python, naming the agent's real socket: it works
    escaped = json.dumps(conf(net)).replace('"name"', '"agentSocket": '
                                            '"\\u002frun/overnet/overnet.sock", "name"')
    cid = secrets.token_hex(16)
    ok(a.plugin("ADD", escaped.encode(), cid, ns))
    ok(a.plugin("DEL", escaped.encode(), cid, ns))
    assert cid not in {e["container_id"] for e in lab.api(a.name).get("/endpoints")}


def test_pending_dels_are_finished_by_the_next_add(world):
    """A DEL kept while the agent was away (as the Python fallback keeps it) is finished by
    the agent's POST /cni before its next ADD, and the address is free again."""
    lab, hosts, net = world
    a = hosts["a"]
    host = lab.host(a.name)
    kept = os.path.join(host.run_dir, "overnet", f"pend-{secrets.token_hex(2)}")
    inside = "/run/overnet/" + os.path.basename(kept)        # the same dir, seen by the host
    ns_name, ns = a.netns()
    cid = secrets.token_hex(16)
    ok(a.plugin("ADD", conf(net, pendingDir=inside), cid, ns))
    try:
        pending.remember(kept, cid, "eth0", net)
        _, ns2 = a.netns()
        cid2 = secrets.token_hex(16)
        ok(a.plugin("ADD", conf(net, pendingDir=inside), cid2, ns2))
        assert pending.entries(kept) == []
        assert cid not in {e["container_id"] for e in lab.api(a.name).get("/endpoints")}
        assert a.addresses(ns_name) == []
        ok(a.plugin("DEL", conf(net, pendingDir=inside), cid2, ns2))
    finally:
        shutil.rmtree(kept, ignore_errors=True)
