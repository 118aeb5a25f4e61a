"""Two hosts on one underlay, real etcd, real agents: networks, containers, traffic, kernel state."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import time

from tests.labfixture import wait_until


def test_network_created_on_one_host_is_listed_on_the_other(lab2):
    net_id = lab2.out("net-1", "network", "create", "-d", "overlay", "seen")
    assert re.fullmatch(r"[0-9a-f]{64}", net_id)
    t0 = time.monotonic()
    assert wait_until(lambda: "seen" in lab2.out("net-2", "network", "ls"), timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    row = [line for line in lab2.out("net-2", "network", "ls").splitlines() if "seen" in line]
    assert row[0].split() == [net_id[:12], "seen", "overlay"]
    lab2.ov("net-2", "network", "rm", "seen")
    assert wait_until(lambda: "seen" not in lab2.out("net-1", "network", "ls"))


def test_builtin_networks_on_every_host(lab2):
    for host in ("net-1", "net-2"):
        rows = {tuple(line.split()[1:]) for line in
                lab2.out(host, "network", "ls").splitlines()[1:]}
        assert {("none", "null"), ("host", "host"), ("bridge", "bridge"),
                ("multihost", "overlay")} <= rows


def test_cross_host_ping_and_vxlan_device(lab2):
    lab2.ov("net-1", "network", "create", "dp")
    a = lab2.out("net-1", "run", "-d", "--net", "dp", "--name", "dp-a", "sleep", "infinity")
    b = lab2.out("net-2", "run", "-d", "--net", "dp", "--name", "dp-b", "sleep", "infinity")
    try:
        ip_b = lab2.inspect("net-2", b)["NetworkSettings"]["IPAddress"]
        assert lab2.ping("net-1", a, ip_b)
        assert lab2.ping("net-2", b, "dp-a")           # by name, through /etc/hosts
        net = json.loads(lab2.out("net-1", "network", "inspect", "dp"))[0]
        links = lab2.sh("net-1", "nsenter", f"--net={net['namespace']}", "ip", "-d", "link",
                        "show").stdout
        vx = re.search(r"\d+: (\S+?):.*?mtu (\d+).*?\n.*?\n\s+vxlan id (\d+) (.*)", links)
        assert vx, links
        assert int(vx.group(2)) == 1450 and int(vx.group(3)) == net["vni"] >= 256
        assert "dstport 4789" in vx.group(4) and "nolearning" in vx.group(4)
        assert "local " + lab2.host("net-1").address in vx.group(4)
        assert re.search(r"gw0@vxlan0: .*mtu 1450", links)     # the gateway's macvlan
        assert len(re.findall(r"^\d+: ", links, re.M)) == 3      # lo, vxlan0, gw0: nothing else
        key = lab2.inspect("net-1", a)["NetworkSettings"]["SandboxKey"]
        eth0 = lab2.sh("net-1", "nsenter", f"--net={key}", "ip", "-d", "link", "show",
                       "eth0").stdout
        assert "mtu 1450" in eth0 and "macvlan mode bridge" in eth0
        # remote peers are static: a permanent FDB entry and neighbour entry, nothing learned
        fdb = lab2.sh("net-1", "nsenter", f"--net={net['namespace']}", "bridge", "fdb", "show",
                      "dev", vx.group(1).split("@")[0]).stdout
        assert f"dst {lab2.host('net-2').address}" in fdb and "permanent" in fdb
        neigh = lab2.sh("net-1", "nsenter", f"--net={net['namespace']}", "ip", "neigh",
                        "show", ip_b).stdout
        assert "PERMANENT" in neigh
    finally:
        lab2.ov("net-1", "rm", "-f", a)
        lab2.ov("net-2", "rm", "-f", b)
        lab2.ov("net-1", "network", "rm", "dp")


def test_fifty_concurrent_containers_get_distinct_addresses(lab2):
    lab2.ov("net-1", "network", "create", "--subnet", "10.77.0.0/24", "many")

    def start(i: int) -> dict:
        host = ("net-1", "net-2")[i % 2]
        return lab2.client(host).post("/containers", {"net": "many", "detach": True,
                                                      "cmd": ["sleep", "infinity"]})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        made = list(pool.map(start, range(50)))
    try:
        ips = [c["NetworkSettings"]["IPAddress"] for c in made]
        assert len(set(ips)) == 50
        assert "10.77.0.0" not in ips and "10.77.0.1" not in ips and "10.77.0.255" not in ips
    finally:
        def remove(c: dict) -> None:
            lab2.client(c["Host"]).delete(f"/containers/{c['Id']}", force="1")
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(remove, made))
        lab2.ov("net-1", "network", "rm", "many")


def _kernel_state(lab, host: str) -> dict:
    """Everything an agent may leave in its host: namespaces, root-ns links."""
    links = lab.sh(host, "ip", "-o", "link", "show").stdout
    return {"netns": lab.netns_files(host),
            "links": sorted(line.split(":")[1].strip().split("@")[0]
                            for line in links.splitlines())}


def test_removal_leaves_nothing_behind(lab2):
    before = {h: _kernel_state(lab2, h) for h in ("net-1", "net-2")}
    lab2.ov("net-1", "network", "create", "gone")
    a = lab2.out("net-1", "run", "-d", "--net", "gone", "sleep", "infinity")
    b = lab2.out("net-2", "run", "-d", "--net", "gone", "sleep", "infinity")
    net = json.loads(lab2.out("net-1", "network", "inspect", "gone"))[0]
    assert len(lab2.netns_files("net-1")) == len(before["net-1"]["netns"]) + 2
    lab2.ov("net-2", "rm", "-f", b)
    # b's entries leave net-1's network namespace
    ns = net["namespace"]
    assert wait_until(lambda: "PERMANENT" not in lab2.sh(
        "net-1", "nsenter", f"--net={ns}", "ip", "neigh", "show", "nud", "permanent").stdout)
    fdb = lab2.sh("net-1", "nsenter", f"--net={ns}", "bridge", "fdb", "show").stdout
    assert "dst " not in fdb
    lab2.ov("net-1", "rm", "-f", a)
    lab2.ov("net-1", "network", "rm", "gone")
    for h in ("net-1", "net-2"):
        assert wait_until(lambda: _kernel_state(lab2, h) == before[h]), _kernel_state(lab2, h)
    assert "gone" not in lab2.out("net-2", "network", "ls")


def test_agent_kill9_restart_keeps_traffic(lab2):
    lab2.ov("net-1", "network", "create", "live")
    a = lab2.out("net-1", "run", "-d", "--net", "live", "sleep", "infinity")
    b = lab2.out("net-2", "run", "-d", "--net", "live", "sleep", "infinity")
    try:
        ip_b = lab2.inspect("net-2", b)["NetworkSettings"]["IPAddress"]
        assert lab2.ping("net-1", a, ip_b)
        before = {h: _kernel_state(lab2, h) for h in ("net-1", "net-2")}
        argv, env = lab2.ssh_argv("net-1", ["overnet", "exec", a, "ping", "-i", "0.1",
                                            "-c", "60", "-W", "1", ip_b])
        pinger = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        lab2.restart_agent("net-2")        # kill -9, start again
        time.sleep(0.5)
        lab2.restart_agent("net-1")
        out, _ = pinger.communicate(timeout=30)
        sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received",
                                            out).groups())
        print(f"[restart] kill -9 of both agents: {sent - received} of {sent} pings lost")
        assert sent - received <= 1, out
        after = {h: _kernel_state(lab2, h) for h in ("net-1", "net-2")}
        assert after == before
        assert lab2.ping("net-2", b, lab2.inspect("net-1", a)["Name"])
    finally:
        lab2.ov("net-1", "rm", "-f", a)
        lab2.ov("net-2", "rm", "-f", b)
        lab2.ov("net-1", "network", "rm", "live")


def test_store_restart_is_survived(lab2):
    """etcd goes away and comes back: traffic keeps flowing, agents catch up."""
    a = lab2.out("net-1", "run", "-d", "--name", "before", "sleep", "infinity")
    try:
        lab2.restart_store(down_for=2.0)
        b = lab2.out("net-2", "run", "-d", "--name", "after", "sleep", "infinity")
        assert lab2.ping("net-1", a, "after") or wait_until(lambda: lab2.ping("net-1", a, "after"))
        assert lab2.ping("net-2", b, "before")
        lab2.ov("net-2", "rm", "-f", b)
    finally:
        lab2.ov("net-1", "rm", "-f", a)
