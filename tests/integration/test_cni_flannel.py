"""The `flannel` type of overnet-cni with Debian's reference plugins (bridge, host-local,
portmap from /usr/lib/cni), in a "host" and a "container" network namespace made by the test:
flannel's conflist works unchanged over a subnet.env."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import pytest

from overnet.cni import install as installer
from overnet.dataplane import netns

REFERENCE = "/usr/lib/cni"
NSENTER = "/usr/bin/nsenter"


@dataclass
class World:
    root: str
    host: str        # the "host" network namespace the runtime runs plugins in
    cont: str        # the container's network namespace
    bin: str         # CNI_PATH: reference plugins + the installed flannel/overnet-cni
    subnet: ipaddress.IPv4Network
    token: str

    def conf(self, version: str, **extra) -> dict:
        return dict({"cniVersion": version, "name": f"cbr{self.token}", "type": "flannel",
                     "subnetFile": os.path.join(self.root, "subnet.env"),
                     "dataDir": os.path.join(self.root, "flannel"),
                     "ipam": {"dataDir": os.path.join(self.root, "ipam")},
                     "delegate": {"bridge": f"ovb{self.token}", "isDefaultGateway": True}},
                    **extra)

    def plugin(self, name: str, verb: str, conf: dict, cid: str = "ctr1",
               path: str | None = None) -> subprocess.CompletedProcess:
        """Run a plugin as a runtime does: in the host namespace, with only CNI_* set."""
        env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": self.cont,
               "CNI_IFNAME": "eth0", "CNI_PATH": self.bin}
        if path:
            env["PATH"] = path
        return subprocess.run([NSENTER, f"--net={self.host}", os.path.join(self.bin, name)],
                              input=json.dumps(conf).encode(), env=env, capture_output=True,
                              timeout=60, check=False)

    def ip(self, ns: str, *args: str) -> list | dict:
        out = subprocess.run([NSENTER, f"--net={ns}", "ip", "-j", *args], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        return json.loads(out or "[]")


@pytest.fixture
def world():
    token = secrets.token_hex(3)
    root = tempfile.mkdtemp(prefix=f"ovcni-{token}-")
    made: list[str] = []
    try:
        for name in ("host", "cont"):
            made.append(os.path.join(root, "ns", name))
            netns.create_netns(made[-1])
        bindir = os.path.join(root, "bin")
        os.makedirs(bindir)
        for plugin in ("bridge", "host-local", "portmap", "bandwidth"):
            os.symlink(os.path.join(REFERENCE, plugin), os.path.join(bindir, plugin))
        installer.install([bindir], os.path.join(root, "net.d"), "overnet", "1.0.0")
        subnet = ipaddress.ip_network(f"10.244.{random.randrange(1, 250)}.0/24")
        with open(os.path.join(root, "subnet.env"), "w") as f:
            f.write(f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={subnet[1]}/24\n"
                    "FLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n")
        yield World(root, made[0], made[1], bindir, subnet, token)
    finally:
        for path in made:
            netns.delete_netns(path)
        shutil.rmtree(root, ignore_errors=True)


def ok(proc: subprocess.CompletedProcess) -> dict | None:
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
    return json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_add_check_del(world, version):
    res = ok(world.plugin("flannel", "ADD", world.conf(version)))
    assert res["cniVersion"] == version
    address = ipaddress.ip_interface(res["ips"][0]["address"])
    assert address in world.subnet and str(address.ip) != str(world.subnet[1])
    names = [i["name"] for i in res["interfaces"]]
    assert names[0] == f"ovb{world.token}" and names[-1] == "eth0"
    assert res["interfaces"][-1]["sandbox"] == world.cont

    eth0 = world.ip(world.cont, "addr", "show", "dev", "eth0")[0]
    assert eth0["mtu"] == 1400
    assert f"{address.ip}" in [a["local"] for a in eth0["addr_info"]]
    routes = {r["dst"]: r.get("gateway") for r in world.ip(world.cont, "route")}
    assert routes["default"] == str(world.subnet[1]) and "10.244.0.0/16" in routes
    bridge = world.ip(world.host, "addr", "show", "dev", f"ovb{world.token}")[0]
    assert f"{world.subnet[1]}" in [a["local"] for a in bridge["addr_info"]]
    ping = subprocess.run([NSENTER, f"--net={world.cont}", "ping", "-c", "1", "-W", "2",
                           str(world.subnet[1])], capture_output=True, timeout=10, check=False)
    assert ping.returncode == 0, ping.stdout

    saved = os.path.join(world.root, "flannel", "ctr1")
    with open(saved) as f:
        delegate = json.load(f)
    assert (delegate["type"], delegate["mtu"], delegate["ipMasq"], delegate["isGateway"]) == (
        "bridge", 1400, False, True)
    assert delegate["ipam"]["ranges"] == [[{"subnet": str(world.subnet)}]]

    if version != "0.3.1":
        ok(world.plugin("flannel", "CHECK", world.conf(version, prevResult=res)))
    ok(world.plugin("flannel", "DEL", world.conf(version, prevResult=res)))
    assert not os.path.exists(saved)
    assert world.ip(world.cont, "link", "show", "type", "veth") == []
    veths = world.ip(world.host, "link", "show", "type", "veth")
    assert veths == []
    reserved = os.path.join(world.root, "ipam", f"cbr{world.token}", str(address.ip))
    assert not os.path.exists(reserved)
    ok(world.plugin("flannel", "DEL", world.conf(version)))   # twice: still fine


def test_chain_with_portmap_and_bandwidth(world):
    """portmap and bandwidth after flannel, each fed the previous result: DNAT to the
    container, the host side of its veth shaped."""
    conf = world.conf("1.0.0")
    res = ok(world.plugin("flannel", "ADD", conf))
    ip = res["ips"][0]["address"].split("/")[0]
    portmap = {"cniVersion": "1.0.0", "name": conf["name"], "type": "portmap",
               "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80,
                                                   "protocol": "tcp"}]},
               "prevResult": res}
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    out = ok(world.plugin("portmap", "ADD", portmap, path=path))
    assert out["ips"] == res["ips"]
    rules = subprocess.run([NSENTER, f"--net={world.host}", "iptables-save", "-t", "nat"],
                           capture_output=True, text=True, timeout=10, check=True).stdout
    assert f"{ip}:80" in rules
    bandwidth = {"cniVersion": "1.0.0", "name": conf["name"], "type": "bandwidth",
                 "prevResult": out, "runtimeConfig": {"bandwidth": {
                     "ingressRate": 8000000, "ingressBurst": 80000,
                     "egressRate": 8000000, "egressBurst": 80000}}}
    ok(world.plugin("bandwidth", "ADD", bandwidth, path=path))
    veth = res["interfaces"][1]["name"]
    qdisc = subprocess.run([NSENTER, f"--net={world.host}", "tc", "qdisc", "show", "dev", veth],
                           capture_output=True, text=True, timeout=10, check=True).stdout
    assert "tbf" in qdisc
    ok(world.plugin("bandwidth", "DEL", bandwidth, path=path))
    ok(world.plugin("portmap", "DEL", portmap, path=path))
    ok(world.plugin("flannel", "DEL", conf))


def test_failed_delegate_add_leaves_nothing(world):
    """The reference plugins stop at 1.0.0: a 1.1.0 ADD fails with their error, and flannel
    undoes it (the spec's DEL after a failed delegate ADD)."""
    proc = world.plugin("flannel", "ADD", world.conf("1.1.0"))
    err = json.loads(proc.stdout)
    assert proc.returncode == 1 and err["code"] == 1, err
    assert not os.path.exists(os.path.join(world.root, "flannel", "ctr1"))
    assert world.ip(world.host, "link", "show", "type", "veth") == []


def test_unknown_delegate_and_missing_lease(world):
    proc = world.plugin("flannel", "ADD", world.conf("1.0.0", delegate={"type": "nosuch"}))
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 7
    os.unlink(os.path.join(world.root, "subnet.env"))
    proc = world.plugin("flannel", "ADD", world.conf("1.0.0"))
    err = json.loads(proc.stdout)
    assert proc.returncode == 1 and err["code"] == 11 and "subnet.env" in err["msg"]


def test_the_flannel_type_through_the_overnet_cni_shim(world):
    """A conflist may name the overnet-cni executable with type flannel: the compiled shim
    hands it to the Python plugin, which runs flannel's logic."""
    with open(os.path.join(world.bin, "overnet-cni"), "rb") as f:
        assert f.read(4) == b"\x7fELF"
    res = ok(world.plugin("overnet-cni", "ADD", world.conf("1.0.0")))
    assert ipaddress.ip_interface(res["ips"][0]["address"]) in world.subnet
    assert os.path.exists(os.path.join(world.root, "flannel", "ctr1"))
    ok(world.plugin("overnet-cni", "DEL", world.conf("1.0.0")))
    assert world.ip(world.cont, "link", "show", "type", "veth") == []
