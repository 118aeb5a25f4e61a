"""The dataplane against the real kernel: two hosts (namespaces) on a private underlay.

Needs root and netns/veth/bridge/vxlan support. Each test builds its own lab with unique names
and tears it down (checking that nothing is left) even when it fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from overnet.dataplane import macvlan, netns
from overnet.dataplane.fastpath import LoopAttach
from overnet.dataplane.kernel import DataplaneError, Kernel

try:  # works whether or not tests/integration is a package
    from .netns_fixtures import Host, Lab, destroy_lab, in_ns, leftovers, make_lab, ping
except ImportError:
    from netns_fixtures import Host, Lab, destroy_lab, in_ns, leftovers, make_lab, ping

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

VNI = 4242
GW = "10.0.0.1/16"
MTU = 1450


@pytest.fixture
def lab() -> Iterator[Lab]:
    the_lab = make_lab(2)
    try:
        yield the_lab
    finally:
        destroy_lab(the_lab)
    assert leftovers(the_lab) == []


@pytest.fixture
def kernels(lab: Lab) -> Iterator[list[Kernel]]:
    """One Kernel per host, each treating its host's namespace as home."""
    ks = [Kernel(host_ns=h.ns) for h in lab.hosts]
    try:
        yield ks
    finally:
        for k in ks:
            k.close()


def mac_of(i: int) -> str:
    return f"02:42:0a:00:00:{i:02x}"


def ip_of(i: int) -> str:
    return f"10.0.0.{i}"


def setup_overlay(lab: Lab, kernels: list[Kernel], vni: int = VNI, name: str = "net1",
                  first_ip: int = 2) -> list[tuple[str, str, str, str]]:
    """One network on every host with one container each, peers programmed everywhere.

    Returns (container_ns, net_ns, ip, mac) per host.
    """
    placed = []
    for i, (host, k) in enumerate(zip(lab.hosts, kernels)):
        net = lab.net_ns(host, name)
        k.ensure_overlay(net, vni, GW, k.underlay_mtu(host.underlay_ip) - 50, host.underlay_ip)
        c = lab.container(f"{name}-c{host.name}")
        n = first_ip + i
        k.attach_macvlan(net, c, f"{ip_of(n)}/16", mac_of(n), MTU)
        placed.append((c, net, ip_of(n), mac_of(n)))
    for i, (host, k) in enumerate(zip(lab.hosts, kernels)):
        for j, other in enumerate(lab.hosts):
            if j != i:
                _c, _net, ip, mac = placed[j]
                k.add_peer(placed[i][1], mac, ip, other.underlay_ip)
    return placed


def links(ns: str) -> list[str]:
    return sorted(in_ns(ns, "ip", "-o", "link", "show").stdout.splitlines())


def settled(net: str) -> bool:
    """Wait until gw0 of `net` reports operstate UP, True if it does (within 5 s).

    The kernel updates operstates asynchronously (linkwatch, up to a second after a device
    comes up), so link lines taken right after an attach can still change by themselves.
    """
    for _ in range(50):
        if " state UP " in in_ns(net, "ip", "-o", "link", "show", "gw0").stdout:
            return True
        time.sleep(0.1)
    return False


def fdb_lines(net: str) -> list[str]:
    out = in_ns(net, "bridge", "fdb", "show", "dev", "vxlan0").stdout
    return sorted(line for line in out.splitlines() if " dst " in line)


def neigh_lines(net: str) -> list[str]:
    return sorted(in_ns(net, "ip", "neigh", "show", "dev", "vxlan0").stdout.splitlines())


def udp_ports(ns: str) -> list[int]:
    """Bound UDP ports in a namespace (/proc/net is per namespace of the reader)."""
    lines = in_ns(ns, "cat", "/proc/net/udp").stdout.splitlines()[1:]
    return [int(line.split()[1].split(":")[1], 16) for line in lines]


# -- netns helpers ----------------------------------------------------------------------------

def test_netns_helpers(lab: Lab) -> None:
    d = os.path.join(lab.root, "state-x")
    netns.ensure_private_dir(d)
    netns.ensure_private_dir(d)  # idempotent: still one mount
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f if line.split()[4] == d]
    assert len(mounts) == 1
    assert not any(opt.startswith(("shared:", "master:")) for opt in mounts[0][6:]), mounts
    p = os.path.join(d, "n1")
    netns.create_netns(p)
    ino = os.stat(p).st_ino
    netns.create_netns(p)  # idempotent: the same namespace is kept
    assert os.stat(p).st_ino == ino
    assert netns.is_netns(p) and not netns.is_netns(d)
    # A namespace file of another kind, a plain file, a missing path: not network namespaces.
    assert netns.is_netns("/proc/self/ns/net") and not netns.is_netns("/proc/self/ns/mnt")
    assert not netns.is_netns("/etc/hostname") and not netns.is_netns(os.path.join(d, "none"))
    assert netns.list_netns(d) == ["n1"]
    assert "lo" in in_ns(p, "ip", "-o", "link", "show", "up").stdout
    # A private dir made over existing namespaces keeps them reachable (MS_REC bind).
    netns.ensure_private_dir(os.path.join(lab.root, "state-x"))
    assert netns.is_netns(p)

    before = os.readlink("/proc/thread-self/ns/net")
    with netns.entered(p):
        assert os.readlink("/proc/thread-self/ns/net") == f"net:[{ino}]"
    assert os.readlink("/proc/thread-self/ns/net") == before
    with pytest.raises(RuntimeError):
        with netns.entered(p):
            raise RuntimeError("boom")
    assert os.readlink("/proc/thread-self/ns/net") == before

    netns.delete_netns(p)
    netns.delete_netns(p)  # absent is fine
    assert not os.path.exists(p) and netns.list_netns(d) == []


# -- overlay ----------------------------------------------------------------------------------

def test_overlay_ping_across_hosts(lab: Lab, kernels: list[Kernel]) -> None:
    assert kernels[0].underlay_mtu(lab.hosts[0].underlay_ip) == 1500
    (c1, net1, ip1, mac1), (c2, net2, ip2, mac2) = setup_overlay(lab, kernels)

    assert ping(c1, ip2), "container on host a cannot reach container on host b"
    assert ping(c2, ip1), "container on host b cannot reach container on host a"
    assert ping(c1, "10.0.0.1"), "container cannot reach its network's gateway (gw0)"

    detail = in_ns(net1, "ip", "-d", "link", "show", "vxlan0").stdout
    assert f"vxlan id {VNI} " in detail
    assert "dstport 4789" in detail and "nolearning" in detail and " proxy" in detail
    assert "l2miss" not in detail and "l3miss" not in detail
    assert f"local {lab.hosts[0].underlay_ip}" in detail and "master" not in detail
    for line in links(net1):
        if not line.split(": ")[1].startswith("lo"):
            assert f"mtu {MTU} " in line, line
    eth0 = in_ns(c1, "ip", "-o", "-d", "link", "show", "eth0").stdout
    assert f"mtu {MTU} " in eth0 and mac1 in eth0 and "state UP" in eth0
    assert "macvlan mode bridge" in eth0
    assert f"inet {ip1}/16" in in_ns(c1, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert "UP" in in_ns(c1, "ip", "-o", "link", "show", "lo").stdout

    # The UDP socket lives on the host's underlay, not in the network namespace.
    assert 4789 in udp_ports(lab.hosts[0].ns)
    assert 4789 not in udp_ports(net1)

    assert kernels[0].vxlan_info(net1) == {
        "vni": VNI, "port": 4789, "local": lab.hosts[0].underlay_ip, "learning": False,
        "proxy": True, "l2miss": False, "l3miss": False, "mtu": MTU, "master": None,
        "up": True}


def test_idempotent(lab: Lab, kernels: list[Kernel]) -> None:
    (c1, net1, ip1, mac1), (c2, net2, ip2, mac2) = setup_overlay(lab, kernels)
    k = kernels[0]
    host_a = lab.hosts[0]
    assert settled(net1)
    snapshot = (links(net1), links(c1), fdb_lines(net1), neigh_lines(net1),
                in_ns(net1, "ip", "-o", "addr").stdout, in_ns(c1, "ip", "-o", "addr").stdout,
                links(host_a.ns))
    k.ensure_overlay(net1, VNI, GW, MTU, host_a.underlay_ip)
    k.attach_macvlan(net1, c1, f"{ip1}/16", mac1, MTU)
    k.add_peer(net1, mac2, ip2, lab.hosts[1].underlay_ip)
    k.add_peer(net1, mac2.upper(), ip2, lab.hosts[1].underlay_ip)
    after = (links(net1), links(c1), fdb_lines(net1), neigh_lines(net1),
             in_ns(net1, "ip", "-o", "addr").stdout, in_ns(c1, "ip", "-o", "addr").stdout,
             links(host_a.ns))
    # Link lines carry counters that do not change; compare them as a whole.
    assert after == snapshot
    assert ping(c1, ip2)


def test_ensure_overlay_recreates_changed_vxlan(lab: Lab, kernels: list[Kernel]) -> None:
    k, host = kernels[0], lab.hosts[0]
    net = lab.net_ns(host, "net1")
    k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
    k.ensure_overlay(net, VNI + 1, GW, MTU, host.underlay_ip, port=4790)
    info = k.vxlan_info(net)
    assert (info["vni"], info["port"], info["up"]) == (VNI + 1, 4790, True)
    assert "macvlan" in in_ns(net, "ip", "-d", "link", "show", "gw0").stdout
    # The first VNI was released at once and can serve another network.
    other = lab.net_ns(host, "net2")
    k.ensure_overlay(other, VNI, "10.1.0.1/16", MTU, host.underlay_ip)
    assert k.vxlan_info(other)["vni"] == VNI
    # No temporary vxlan device stays behind in the host namespace.
    assert not [line for line in links(host.ns) if "onvx" in line]


def test_peers_roundtrip_and_remove(lab: Lab, kernels: list[Kernel]) -> None:
    k, host = kernels[0], lab.hosts[0]
    net = lab.net_ns(host, "net1")
    k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
    want = {(mac_of(i), ip_of(i), f"192.168.77.{i % 3 + 2}") for i in range(10, 20)}
    for p in want:
        k.add_peer(net, *p)
    assert k.peers(net) == want
    assert len(fdb_lines(net)) == 10 and len(neigh_lines(net)) == 10
    assert all("self permanent" in line for line in fdb_lines(net))
    assert all("PERMANENT" in line for line in neigh_lines(net))

    gone = (mac_of(10), ip_of(10), "192.168.77.3")
    assert gone in want
    k.remove_peer(net, *gone)
    k.remove_peer(net, *gone)  # missing is fine
    assert k.peers(net) == want - {gone}
    assert not [line for line in fdb_lines(net) if mac_of(10) in line]
    assert not [line for line in neigh_lines(net) if line.startswith(f"{ip_of(10)} ")]

    # An endpoint that moved (same MAC, new host) or whose IP was reused (new MAC) is not
    # removed by a late removal of its old incarnation.
    moved = (mac_of(11), ip_of(11), "192.168.77.9")
    k.add_peer(net, *moved)
    k.remove_peer(net, mac_of(11), ip_of(11), "192.168.77.4")
    reused = ("02:42:0a:00:00:ff", ip_of(12), "192.168.77.2")
    k.add_peer(net, *reused)
    k.remove_peer(net, mac_of(12), ip_of(12), "192.168.77.2")
    peers = k.peers(net)
    assert moved in peers and reused in peers
    # peers() only pairs an FDB entry with a neighbour that names the same MAC.
    assert not any(p[0] == mac_of(12) for p in peers)


def test_networks_isolated(lab: Lab, kernels: list[Kernel]) -> None:
    (c1, net1a, ip1, _), (c2, net1b, ip2, _) = setup_overlay(lab, kernels, VNI, "net1", 2)
    # Second network: same subnet, different VNI, containers .4 (host a) and .5 (host b).
    (c3, net2a, ip3, _), (c4, net2b, ip4, mac4) = setup_overlay(lab, kernels, VNI + 1,
                                                                "net2", 4)
    assert ping(c3, ip4) and ping(c1, ip2)
    # Even with net1 on host a told where c4 lives, VNI 4242 frames reach only net1 on b.
    kernels[0].add_peer(net1a, mac4, ip4, lab.hosts[1].underlay_ip)
    assert not ping(c1, ip4, count=2)
    assert not ping(c3, ip2, count=2)
    # Both networks share the one UDP socket of the host.
    assert udp_ports(lab.hosts[0].ns).count(4789) == 1


def test_remove_overlay(lab: Lab, kernels: list[Kernel]) -> None:
    (c1, net1, ip1, _), _ = setup_overlay(lab, kernels)
    k, host = kernels[0], lab.hosts[0]
    k.remove_overlay(net1)
    k.remove_overlay(net1)  # absent is fine
    k.remove_peer(net1, mac_of(3), ip_of(3), lab.hosts[1].underlay_ip)
    assert not os.path.exists(net1)
    assert netns.list_netns(host.state_dir) == []
    assert "eth0" not in in_ns(c1, "ip", "-o", "link").stdout  # unplugged synchronously
    # VNI reusable at once, in a fresh namespace.
    k.ensure_overlay(net1, VNI, GW, MTU, host.underlay_ip)
    assert k.vxlan_info(net1)["vni"] == VNI


def test_restart_adopts_state(lab: Lab, kernels: list[Kernel]) -> None:
    (c1, net1, ip1, mac1), (c2, net2, ip2, mac2) = setup_overlay(lab, kernels)
    host = lab.hosts[0]
    assert settled(net1)
    before = links(net1), links(c1), links(host.ns)
    kernels[0].close()
    kernels[0] = k = Kernel(host_ns=host.ns)  # a restarted agent: nothing cached
    assert k.peers(net1) == {(mac2, ip2, lab.hosts[1].underlay_ip)}
    k.ensure_overlay(net1, VNI, GW, MTU, host.underlay_ip)
    k.attach_macvlan(net1, c1, f"{ip1}/16", mac1, MTU)
    assert (links(net1), links(c1), links(host.ns)) == before  # same devices, same ifindexes
    assert ping(c1, ip2)


def test_reattach_repairs_drift(lab: Lab, kernels: list[Kernel]) -> None:
    (c1, net1, ip1, mac1), (_c2, _net2, ip2, _mac2) = setup_overlay(lab, kernels)
    k = kernels[0]
    # Someone downs the container's interface, shrinks it and strips its address.
    in_ns(c1, "ip", "link", "set", "eth0", "down", "mtu", "1300")
    in_ns(c1, "ip", "addr", "flush", "dev", "eth0")
    k.attach_macvlan(net1, c1, f"{ip1}/16", mac1, MTU)
    eth0 = in_ns(c1, "ip", "-o", "link", "show", "eth0").stdout
    assert ",UP" in eth0 and f"mtu {MTU} " in eth0
    assert f"inet {ip1}/16" in in_ns(c1, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert ping(c1, ip2)


def test_a_namespace_of_the_earlier_layout_is_converted(lab: Lab, kernels: list[Kernel]
                                                          ) -> None:
    """br0 over vxlan0 and a veth pair per container (overnet before macvlans): ensuring the
    network takes the bridge away, attaching the container again replaces its veth by a
    macvlan with the same MAC and address, and traffic flows."""
    (c1, net1, ip1, mac1), (_c2, _net2, ip2, _mac2) = setup_overlay(lab, kernels)
    k, host = kernels[0], lab.hosts[0]
    k.detach_macvlan(c1, "eth0", mac1)              # the earlier layout, made by hand
    in_ns(net1, "ip", "link", "del", "gw0")
    in_ns(net1, "ip", "link", "add", "br0", "mtu", str(MTU), "type", "bridge")
    in_ns(net1, "ip", "addr", "add", GW, "dev", "br0")
    in_ns(net1, "ip", "link", "set", "br0", "up")
    in_ns(net1, "ip", "link", "set", "vxlan0", "master", "br0")
    k.forget(net1)
    k.attach(net1, c1, "veth1000002", f"{ip1}/16", mac1, MTU, bridge="br0")
    assert ping(c1, ip2)
    k.ensure_overlay(net1, VNI, GW, MTU, host.underlay_ip)
    k.attach_macvlan(net1, c1, f"{ip1}/16", mac1, MTU)
    eth0 = in_ns(c1, "ip", "-o", "-d", "link", "show", "eth0").stdout
    assert "macvlan mode bridge" in eth0 and mac1 in eth0
    names = {ln.split(": ")[1].split("@")[0] for ln in links(net1)}
    assert names == {"lo", "vxlan0", "gw0"}
    assert ping(c1, ip2) and ping(c1, "10.0.0.1")


def test_fresh_attach_takes_the_packed_path(lab: Lab, kernels: list[Kernel],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A new container's macvlan is made by the hand-packed requests alone (rtnl.py): were
    they to fail, attach_macvlan() would still succeed the slow way, and only this test would
    tell."""
    k, host = kernels[0], lab.hosts[0]
    net = lab.net_ns(host, "net1")
    k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
    c = lab.container("packed")

    def slow(*_: object) -> None:
        raise AssertionError("the slow path was taken for a fresh device")
    monkeypatch.setattr(macvlan, "_create", slow)
    k.attach_macvlan(net, c, "10.0.1.77/16", mac_of(77), MTU, gateway="10.0.0.1")
    eth0 = in_ns(c, "ip", "-o", "-d", "link", "show", "eth0").stdout
    assert ",UP" in eth0 and f"mtu {MTU} " in eth0 and mac_of(77) in eth0
    assert "macvlan mode bridge" in eth0
    assert "inet 10.0.1.77/16" in in_ns(c, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert "default via 10.0.0.1 dev eth0" in in_ns(c, "ip", "route").stdout
    assert ",UP" in in_ns(c, "ip", "-o", "link", "show", "lo").stdout


def test_loop_attach(lab: Lab, kernels: list[Kernel]) -> None:
    """The event loop's fast path (fastpath.py): a new container's macvlan is made whole; what
    it cannot do (a name taken) it leaves untouched, for the kernel thread; a configuration
    the kernel refuses leaves nothing; and a network namespace made again under the same path
    is not mistaken for the old one."""
    k, host = kernels[0], lab.hosts[0]
    net = lab.net_ns(host, "net1")
    k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
    fast = LoopAttach()
    try:
        c = lab.container("loop")
        assert fast.attach(net, c, "10.0.1.80/16", mac_of(80), MTU, "10.0.0.1",
                           "eth0") is True
        eth0 = in_ns(c, "ip", "-o", "-d", "link", "show", "eth0").stdout
        assert ",UP" in eth0 and f"mtu {MTU} " in eth0 and mac_of(80) in eth0
        assert "macvlan" in eth0
        assert "inet 10.0.1.80/16" in in_ns(c, "ip", "-o", "-4", "addr", "show", "eth0").stdout
        assert "default via 10.0.0.1 dev eth0" in in_ns(c, "ip", "route").stdout

        # the name is taken in the container: nothing is made, nothing touched
        assert fast.attach(net, c, "10.0.1.81/16", mac_of(81), MTU, None,
                           "eth0") is False
        assert "inet 10.0.1.80/16" in in_ns(c, "ip", "-o", "-4", "addr", "show", "eth0").stdout

        # the network removed and made again behind its back (no forget()): a new socket
        other = lab.container("loop2")
        k.remove_overlay(net)
        k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
        assert fast.attach(net, other, "10.0.1.81/16", mac_of(81), MTU, None,
                           "eth0") is True
        assert "macvlan" in in_ns(other, "ip", "-o", "-d", "link", "show", "eth0").stdout

        # made, then a configuration the kernel refuses (a gateway off the subnet): the
        # device goes again, for the kernel thread to try and explain
        third = lab.container("loop3")
        assert fast.attach(net, third, "10.0.1.82/16", mac_of(82), MTU, "192.0.2.1",
                           "eth0") is False
        assert "eth0" not in in_ns(third, "ip", "-o", "link").stdout
    finally:
        fast.close()


def test_detach(lab: Lab, kernels: list[Kernel]) -> None:
    (c1, net1, _ip1, mac1), _ = setup_overlay(lab, kernels)
    k = kernels[0]
    k.detach_macvlan(c1, "eth0", mac1)
    k.detach_macvlan(c1, "eth0", mac1)  # missing is fine
    assert "eth0" not in in_ns(c1, "ip", "-o", "link").stdout
    assert "gw0@vxlan0" in in_ns(net1, "ip", "-o", "link").stdout   # the network stays


def bridge_mac(ns: str, name: str) -> str:
    out = in_ns(ns, "ip", "-o", "link", "show", name).stdout
    return out.split("link/ether ")[1].split()[0]


def test_gateway_mac_stays_when_a_port_with_a_lower_mac_joins(lab: Lab,
                                                              kernels: list[Kernel]) -> None:
    """Left alone, a bridge takes the lowest MAC of its ports: a container joining would move
    the gateway's MAC under the others' ARP caches (seen: their DNS went unanswered). An
    overlay's gateway is a macvlan of its own, whose MAC no container changes."""
    (c1, net1, ip1, mac1), _ = setup_overlay(lab, kernels)
    assert ping(c1, "10.0.0.1")
    before = bridge_mac(net1, "gw0")
    cached = in_ns(c1, "ip", "neigh", "show", "10.0.0.1").stdout
    assert before in cached, cached
    kernels[0].attach_macvlan(net1, lab.container("low"), "10.0.0.99/16", "02:00:00:00:00:01",
                              MTU)
    assert bridge_mac(net1, "gw0") == before
    assert ping(c1, "10.0.0.1", count=1), "the gateway's MAC moved under c1's ARP cache"
    br = f"onm{lab.token}"           # the local bridge driver's bridge in the host namespace
    host = lab.hosts[0]
    kernels[0].ensure_bridge(br, "172.29.0.1/24", 1500)
    try:
        before = bridge_mac(host.ns, br)
        in_ns(host.ns, "ip", "link", "add", f"vm{lab.token}", "address", "02:00:00:00:00:01",
              "type", "veth", "peer", f"vn{lab.token}")
        in_ns(host.ns, "ip", "link", "set", f"vm{lab.token}", "master", br, "up")
        assert bridge_mac(host.ns, br) == before
    finally:
        in_ns(host.ns, "ip", "link", "del", f"vm{lab.token}", check=False)
        kernels[0].remove_bridge(br)


# -- local bridge driver ----------------------------------------------------------------------

def test_local_bridge(lab: Lab, kernels: list[Kernel]) -> None:
    k, host = kernels[0], lab.hosts[0]
    br = f"onb{lab.token}"
    k.ensure_bridge(br, "172.31.0.1/24", 1500)
    k.ensure_bridge(br, "172.31.0.1/24", 1500)
    ca, cb = lab.container("bra"), lab.container("brb")
    for c, n in ((ca, 2), (cb, 3)):
        for _ in range(2):  # attach twice: no change, no error
            k.attach(None, c, f"vb{lab.token}{n}", f"172.31.0.{n}/24", mac_of(n), 1500,
                     gateway="172.31.0.1", bridge=br)
    assert ping(ca, "172.31.0.3") and ping(cb, "172.31.0.2") and ping(ca, "172.31.0.1")
    assert "default via 172.31.0.1 dev eth0" in in_ns(ca, "ip", "route", "show").stdout
    host_links = in_ns(host.ns, "ip", "-o", "link", "show", "master", br).stdout
    assert host_links.count(f"vb{lab.token}") == 2
    assert "inet 172.31.0.1/24" in in_ns(host.ns, "ip", "-o", "addr", "show", br).stdout
    for n in (2, 3):
        k.detach(None, f"vb{lab.token}{n}")
    k.remove_bridge(br)
    k.remove_bridge(br)
    assert br not in in_ns(host.ns, "ip", "-o", "link").stdout


def test_bridge_recreated_behind_our_back(lab: Lab, kernels: list[Kernel]) -> None:
    k, host = kernels[0], lab.hosts[0]
    br = f"onr{lab.token}"
    k.ensure_bridge(br, "172.30.0.1/24", 1500)
    k.attach(None, lab.container("r1"), f"vr{lab.token}1", "172.30.0.2/24", mac_of(2), 1500,
             bridge=br)
    # The Kernel remembers the bridge's ifindex; a new bridge of that name has another one.
    in_ns(host.ns, "ip", "link", "del", br)
    in_ns(host.ns, "ip", "link", "add", br, "type", "bridge")
    c2 = lab.container("r2")
    k.attach(None, c2, f"vr{lab.token}2", "172.30.0.3/24", mac_of(3), 1500, bridge=br)
    assert f"master {br} " in in_ns(host.ns, "ip", "-o", "link", "show", f"vr{lab.token}2").stdout
    in_ns(host.ns, "ip", "link", "del", br)
    with pytest.raises(DataplaneError, match=f"no bridge {br}"):
        k.attach(None, lab.container("r3"), f"vr{lab.token}3", "172.30.0.4/24", mac_of(4),
                 1500, bridge=br)
    assert f"vr{lab.token}3" not in in_ns(host.ns, "ip", "-o", "link").stdout
    k.detach(None, f"vr{lab.token}2")


# -- errors and threading ---------------------------------------------------------------------

def test_errors_are_clear(lab: Lab, kernels: list[Kernel]) -> None:
    k, host = kernels[0], lab.hosts[0]
    net = lab.net_ns(host, "net1")
    k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
    c = lab.container("err")
    with pytest.raises(DataplaneError, match="ethwaytoolong123"):
        k.attach_macvlan(net, c, "10.0.0.9/16", mac_of(9), MTU, ifname="ethwaytoolong123")
    with pytest.raises(DataplaneError, match="no bridge nosuchbr"):
        k.attach(net, c, "veth9", "10.0.0.9/16", mac_of(9), MTU, bridge="nosuchbr")
    with pytest.raises(DataplaneError, match=f"VNI {VNI} .*already used"):
        k.ensure_overlay(lab.net_ns(host, "net2"), VNI, "10.2.0.1/16", MTU, host.underlay_ip)
    with pytest.raises(DataplaneError, match="10.99.99.99"):
        k.underlay_mtu("10.99.99.99")
    with pytest.raises(DataplaneError, match="not a bridge"):
        k.ensure_bridge("eth0", "10.3.0.1/24", 1500)
    k.attach_macvlan(net, c, "10.0.0.9/16", mac_of(9), MTU)
    with pytest.raises(DataplaneError, match="already has a device named eth0"):
        k.attach_macvlan(net, c, "10.0.0.8/16", mac_of(8), MTU)
    err2, err3 = lab.container("err2"), lab.container("err3")
    with pytest.raises(DataplaneError, match="mtu 10"):
        k.attach_macvlan(net, err2, "10.0.0.10/16", mac_of(10), 10)
    # A failed attach leaves no half-made device behind (a bad MTU fails at creation, an
    # unreachable gateway only after the device exists).
    with pytest.raises(DataplaneError, match="10.0.0.11/16"):
        k.attach_macvlan(net, err3, "10.0.0.11/16", mac_of(11), MTU, gateway="172.16.0.1")
    assert "eth0" not in in_ns(err2, "ip", "-o", "link").stdout
    assert "eth0" not in in_ns(err3, "ip", "-o", "link").stdout


def test_kernel_home_is_creating_thread_namespace(lab: Lab) -> None:
    host = lab.hosts[0]
    with ThreadPoolExecutor(max_workers=1) as pool:
        def make() -> Kernel:
            with netns.entered(host.ns):
                return Kernel()  # home = the namespace current at construction
        k = pool.submit(make).result()
        try:
            assert pool.submit(k.underlay_mtu, host.underlay_ip).result() == 1500
            with pytest.raises(DataplaneError, match="second thread"):
                k.underlay_mtu(host.underlay_ip)
        finally:
            pool.submit(k.close).result()


def test_cached_sockets_do_not_grow(lab: Lab, kernels: list[Kernel]) -> None:
    # pyroute2 0.9 parks the late ACK of every 'get' on the socket; the Kernel empties that
    # queue, so an agent's long-lived sockets stay small however many reads it makes.
    k, host = kernels[0], lab.hosts[0]
    net = lab.net_ns(host, "net1")
    k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
    for _ in range(300):
        assert k.link_info(net, "gw0") is not None
    assert k.socket(net).asyncore.msg_queue.root.qsize() <= 64


# -- speed ------------------------------------------------------------------------------------

def test_attach_timing(lab: Lab, kernels: list[Kernel], capsys: pytest.CaptureFixture[str]
                       ) -> None:
    k, host = kernels[0], lab.hosts[0]
    net = lab.net_ns(host, "net1")
    k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
    containers = [lab.container(f"t{i}") for i in range(20)]
    t0 = time.perf_counter()
    for i, c in enumerate(containers):
        k.attach_macvlan(net, c, f"10.0.1.{i + 1}/16", mac_of(100 + i), MTU)
    attach_ms = (time.perf_counter() - t0) / len(containers) * 1000
    t0 = time.perf_counter()
    for i, c in enumerate(containers):
        k.attach_macvlan(net, c, f"10.0.1.{i + 1}/16", mac_of(100 + i), MTU)
    reattach_ms = (time.perf_counter() - t0) / len(containers) * 1000
    t0 = time.perf_counter()
    for i, c in enumerate(containers):
        k.detach_macvlan(c, "eth0", mac_of(100 + i))
    detach_ms = (time.perf_counter() - t0) / len(containers) * 1000
    with capsys.disabled():
        print(f"\n[dataplane] attach avg {attach_ms:.2f} ms, re-attach (no-op) avg "
              f"{reattach_ms:.2f} ms, detach avg {detach_ms:.2f} ms over {len(containers)}")
    assert not any("eth0" in in_ns(c, "ip", "-o", "link").stdout for c in containers)


def test_single_entry_lookup_falls_back_to_dump() -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    from overnet.dataplane.plumbing import single as _single

    class Entry(dict):  # pyroute2 messages answer .get() for fields and attributes alike
        pass

    entries = [Entry(ifindex=3, lladdr="aa"), Entry(ifindex=3, lladdr="bb", dst="1.2.3.4")]

    def old_kernel(cmd: str, **kw: object) -> list[Entry]:
        raise NetlinkError(95)  # EOPNOTSUPP: no RTM_GETNEIGH 'get' for this family

    def gone(cmd: str, **kw: object) -> list[Entry]:
        raise NetlinkError(2)

    assert _single(old_kernel, lambda: entries, ifindex=3, lladdr="bb", flags=2) is entries[1]
    assert _single(old_kernel, lambda: entries, ifindex=3, lladdr="cc") is None
    assert _single(gone, lambda: entries, ifindex=3, lladdr="bb") is None


def test_lab_hosts(lab: Lab) -> None:
    # The underlay itself works (sanity check for the fixtures).
    a, b = lab.hosts
    assert isinstance(a, Host)
    assert ping(a.ns, b.underlay_ip, count=1)
