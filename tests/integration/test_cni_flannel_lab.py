"""flanneld's own CNI config (kube-flannel's conflist: type flannel, delegate bridge) on
overnet's host subnets: the container gets an address in this host's leased subnet, shares the
agent's bridge without ever taking an address the agent gives out, and a container on another
host pings it."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import tempfile

import pytest

from overnet.cni import install as installer
from tests.integration.test_cni_lab import CniHost, ok
from tests.labfixture import keep_logs, make_lab, wait_until

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"    # runtimes pass theirs: bridge's ipMasq runs iptables
KUBE_FLANNEL = {"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
                "delegate": {"hairpinMode": True, "isDefaultGateway": True}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cniflannel")
    lab = make_lab(str(root), hosts=2, flannel={
        "flannel-network": "10.1.0.0/16", "flannel-backend": "vxlan",
        "default-network": "bridge:bridge"})
    tmp = tempfile.mkdtemp(prefix="ovcni-flannel-")
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    for plugin in ("bridge", "host-local", "portmap"):
        os.symlink(f"/usr/lib/cni/{plugin}", os.path.join(bindir, plugin))
    installer.install([bindir], os.path.join(tmp, "net.d"), "cnitest", "0.3.1")
    host = CniHost(lab, "net-1", tmp)
    try:
        yield lab, host, tmp
    finally:
        host.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        keep_logs(lab, str(root) + "-logs")
        lab.down(quiet=True)


def test_kube_flannel_conflist_on_overnet_host_subnets(world):
    lab, host, tmp = world
    lease = ipaddress.ip_network(lab.api("net-1").get("/subnet/lease")["subnet"])
    conf = {**KUBE_FLANNEL, "dataDir": os.path.join(tmp, "flannel-data")}  # not the machine's
    ns_name, ns = host.netns()
    cid = secrets.token_hex(16)
    result = ok(host.plugin("ADD", conf, cid, ns, exe="flannel", path=PATH))
    ip = ipaddress.ip_interface(result["ips"][0]["address"]).ip
    assert ip in lease
    assert ip >= list(lease.subnets(prefixlen_diff=1))[1].network_address  # the CNI half
    # the agent's own bridge containers keep to the lower half: never the same address
    own = lab.out("net-1", "run", "-d", "sleep", "infinity")
    own_ip = ipaddress.ip_address(lab.inspect("net-1", own)["NetworkSettings"]["IPAddress"])
    assert own_ip in lease and own_ip < ip
    # one bridge, the agent's: the CNI container's veth is a port of overnet0
    ports = lab.run("net-1", ["ip", "-o", "link", "show", "master", "overnet0"]).stdout
    assert len(ports.splitlines()) == 2, ports
    far = lab.out("net-2", "run", "-d", "sleep", "infinity")
    far_ip = lab.inspect("net-2", far)["NetworkSettings"]["IPAddress"]
    assert wait_until(lambda: lab.ping("net-2", far, str(ip), count=1), timeout=5)
    assert host.in_ns(ns_name, "ping", "-c", "1", "-W", "2", far_ip).returncode == 0
    ok(host.plugin("DEL", conf, cid, ns, exe="flannel", path=PATH))
    assert host.addresses(ns_name) == []
    lab.ov("net-1", "rm", "-f", own)
    lab.ov("net-2", "rm", "-f", far)
