"""Host subnets (flannel-compatible) on real namespace hosts with a real etcd: leases, the
vxlan and host-gw backends, subnet.env, masquerade, --link, and flanneld's own records."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import time

import pytest

from overnet.sandbox.lab import _kill
from tests.labfixture import keep_logs, make_lab, wait_until

NETWORK = "10.1.0.0/16"
PREFIX = "/coreos.com/network"
FLANNEL = {"flannel-network": NETWORK, "default-network": "bridge:bridge", "ip-masq": True}
HOSTS = ("net-1", "net-2", "net-3")


def _lab(tmp_path_factory, hosts: int, backend: str):
    root = tmp_path_factory.mktemp("flannel")
    lab = make_lab(str(root), hosts=hosts, flannel={**FLANNEL, "flannel-backend": backend})
    try:
        yield lab
    finally:
        keep_logs(lab, str(root) + "-logs")
        lab.down(quiet=True)


@pytest.fixture(scope="module")
def vx(tmp_path_factory):
    yield from _lab(tmp_path_factory, 3, "vxlan")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from _lab(tmp_path_factory, 2, "host-gw")


def lease(lab, host: str) -> dict:
    return lab.api(host).get("/subnet/lease")


def etcdctl(lab, *args: str) -> str:
    url = f"http://{lab.state.store.address}:2379"
    proc = lab.sh("store", "etcdctl", "--endpoints", url, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def vxlan_state(lab, host: str) -> tuple[list[str], list[str], list[str]]:
    """(routes, permanent neighbours, FDB entries with a dst) on flannel.1, one command."""
    out = lab.sh(host, "sh", "-c", "ip route show dev flannel.1; echo --; "
                 "ip neigh show dev flannel.1 nud permanent; echo --; "
                 "bridge fdb show dev flannel.1").stdout
    routes, neigh, fdb = (part.strip().splitlines() for part in out.split("--\n"))
    return routes, neigh, [line for line in fdb if " dst " in line]


def run(lab, host: str, *args: str) -> str:
    return lab.out(host, "run", "-d", *args, "sleep", "infinity")


def ip_of(lab, host: str, cid: str) -> str:
    return lab.inspect(host, cid)["NetworkSettings"]["IPAddress"]


# --- leases, bridge, subnet.env ---------------------------------------------------------------

def test_three_hosts_three_distinct_subnets(vx):
    leases = {h: lease(vx, h) for h in HOSTS}
    subnets = {ipaddress.IPv4Network(x["subnet"]) for x in leases.values()}
    assert len(subnets) == 3
    assert all(s.prefixlen == 24 and s.subnet_of(ipaddress.IPv4Network(NETWORK))
               for s in subnets)
    print("[flannel] lease acquisition: " + ", ".join(
        f"{h} {x['subnet']} in {x['acquire_seconds'] * 1000:.0f} ms" for h, x in leases.items()))
    # flannel's layout and value, with an etcd lease of 24 h
    for h, x in leases.items():
        key = f"{PREFIX}/subnets/{x['subnet'].replace('/', '-')}"
        value = json.loads(etcdctl(vx, "get", key, "--print-value-only"))
        assert value == {"PublicIP": vx.host(h).address, "BackendType": "vxlan",
                         "BackendData": {"VNI": 1, "VtepMAC": x["backend_data"]["VtepMAC"]}}
        lease_id = json.loads(etcdctl(vx, "get", key, "-w", "json"))["kvs"][0]["lease"]
        ttl = json.loads(etcdctl(vx, "lease", "timetolive", f"{lease_id:x}", "-w", "json"))
        assert 23 * 3600 < ttl["ttl"] <= 24 * 3600 and ttl["granted-ttl"] == 24 * 3600
    config = json.loads(vx.out("net-1", "subnet", "config"))
    assert config["Network"] == NETWORK and config["Backend"]["Type"] == "vxlan"
    listed = vx.out("net-2", "subnet", "ls")
    assert all(x["subnet"] in listed for x in leases.values())


def test_bridge_holds_first_address_and_subnet_env(vx):
    for h in HOSTS:
        x = lease(vx, h)
        sub = ipaddress.IPv4Network(x["subnet"])
        br = vx.sh(h, "ip", "-4", "-o", "addr", "show", "dev", "overnet0").stdout
        assert f"inet {sub.network_address + 1}/24" in br
        assert "mtu 1450" in vx.sh(h, "ip", "link", "show", "overnet0").stdout
        env = open(vx.host(h).run_dir + "/flannel/subnet.env").read()
        assert env == (f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET={sub.network_address + 1}/24"
                       "\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")


# --- vxlan -----------------------------------------------------------------------------------

def test_vxlan_device_one_route_neighbour_fdb_per_remote_host(vx):
    leases = {h: lease(vx, h) for h in HOSTS}
    for h in HOSTS:
        dev = vx.sh(h, "ip", "-d", "-4", "addr", "show", "dev", "flannel.1").stdout
        assert "vxlan id 1 " in dev and "dstport 8472" in dev and "nolearning" in dev
        assert f"local {vx.host(h).address}" in dev and "mtu 1450" in dev
        own = ipaddress.IPv4Network(leases[h]["subnet"])
        assert f"inet {own.network_address}/32" in dev
        routes, neigh, fdb = vxlan_state(vx, h)
        remote = [x for o, x in leases.items() if o != h]
        assert len(routes) == len(neigh) == len(fdb) == 2, (routes, neigh, fdb)
        for x in remote:
            sub = ipaddress.IPv4Network(x["subnet"])
            mac = x["backend_data"]["VtepMAC"]
            assert f"{sub} via {sub.network_address} proto static onlink" \
                in [r.strip() for r in routes]
            assert any(n.startswith(f"{sub.network_address} lladdr {mac} ") for n in neigh)
            assert any(f.startswith(f"{mac} dst {x['public_ip']} ") for f in fdb)


def test_containers_on_different_hosts_ping_over_vxlan(vx):
    a = run(vx, "net-1")
    b = run(vx, "net-3")
    try:
        ip_a, ip_b = ip_of(vx, "net-1", a), ip_of(vx, "net-3", b)
        assert ipaddress.IPv4Address(ip_b) in ipaddress.IPv4Network(lease(vx, "net-3")["subnet"])
        assert vx.ping("net-1", a, ip_b) and vx.ping("net-3", b, ip_a)
        eth0 = vx.ov("net-1", "exec", a, "ip", "link", "show", "eth0").stdout
        assert "mtu 1450" in eth0
    finally:
        vx.ov("net-1", "rm", "-f", a)
        vx.ov("net-3", "rm", "-f", b)


def test_flanneld_written_lease_is_programmed_and_removed_everywhere(vx):
    """A host running flanneld, as flanneld writes its record: every agent takes it as a
    peer; its key deleted, every agent drops its entries within a second."""
    sub, mac, ip = "10.1.250.0/24", "c6:b5:3b:a7:4a:3c", "192.168.201.99"
    key = f"{PREFIX}/subnets/10.1.250.0-24"
    value = ('{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan",'
             '"BackendData":{"VNI":1,"VtepMAC":"%s"}}' % (ip, mac))

    def programmed(h: str) -> bool:
        routes, neigh, fdb = vxlan_state(vx, h)
        return (any(r.startswith(f"{sub} via 10.1.250.0 ") for r in routes)
                and any(n.startswith(f"10.1.250.0 lladdr {mac}") for n in neigh)
                and any(f.startswith(f"{mac} dst {ip} ") for f in fdb))

    etcdctl(vx, "put", key, value)
    t0 = time.monotonic()
    try:
        assert wait_until(lambda: all(programmed(h) for h in HOSTS), timeout=3)
        added = time.monotonic() - t0
        assert all(len(vxlan_state(vx, h)[0]) == 3 for h in HOSTS)
    finally:
        etcdctl(vx, "del", key)
    t0 = time.monotonic()
    assert wait_until(lambda: not any(programmed(h) for h in HOSTS), timeout=3)
    removed = time.monotonic() - t0
    print(f"[flannel] flanneld's lease programmed on 3 hosts in {added * 1000:.0f} ms, "
          f"removed from all in {removed * 1000:.0f} ms")
    assert removed < 1.0
    for h in HOSTS:
        assert [len(x) for x in vxlan_state(vx, h)] == [2, 2, 2]


def test_agent_restart_keeps_its_subnet_and_kernel_state(vx):
    before = {h: (lease(vx, h)["subnet"], vxlan_state(vx, h)) for h in HOSTS}
    a = run(vx, "net-1")
    b = run(vx, "net-2")
    try:
        vx.restart_agent("net-2")                       # kill -9, start again
        after = {h: (lease(vx, h)["subnet"], vxlan_state(vx, h)) for h in HOSTS}
        assert {h: (s, [sorted(x) for x in st]) for h, (s, st) in after.items()} == \
            {h: (s, [sorted(x) for x in st]) for h, (s, st) in before.items()}
        assert vx.ping("net-2", b, ip_of(vx, "net-1", a))
    finally:
        vx.ov("net-1", "rm", "-f", a)
        vx.ov("net-2", "rm", "-f", b)


# --- masquerade ------------------------------------------------------------------------------

def masq_rules(lab, host: str) -> list[dict]:
    proc = lab.sh(host, "nft", "-j", "list", "table", "ip", "overnet")
    if proc.returncode != 0:
        return []
    return [i["rule"] for i in json.loads(proc.stdout)["nftables"] if "rule" in i]


def packets(rule: dict) -> int:
    return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)


def new_flow_ping(lab, host: str, container: str, target: str) -> bool:
    """One ping that is a new flow for conntrack: containers have their own PID namespace,
    so ping's default identifier (its PID) repeats between containers, and an earlier
    test's flow between the same two addresses would still be tracked."""
    ident = str(random.randrange(1, 65535))
    return lab.ov(host, "exec", container, "ping", "-c", "1", "-W", "1", "-e", ident, target,
                  check=False).returncode == 0


def test_masquerade_outside_but_not_inside_the_cluster(vx):
    sub = lease(vx, "net-2")["subnet"]
    rules = masq_rules(vx, "net-2")
    assert len(rules) == 4
    text = vx.sh("net-2", "nft", "list", "table", "ip", "overnet").stdout
    assert f"ip saddr {NETWORK} ip daddr {NETWORK} counter" in text
    assert f"ip saddr {NETWORK} ip daddr != 224.0.0.0/4 counter" in text
    assert f"ip saddr != {NETWORK} ip daddr {sub} counter" in text
    a = run(vx, "net-2")
    b = run(vx, "net-1")
    try:
        inside0, outside0 = (packets(r) for r in masq_rules(vx, "net-2")[:2])
        assert new_flow_ping(vx, "net-2", a, ip_of(vx, "net-1", b))
        inside1, outside1 = (packets(r) for r in masq_rules(vx, "net-2")[:2])
        assert (inside1 - inside0, outside1 - outside0) == (1, 0)
        # net-1's underlay address is outside the cluster network: masqueraded
        assert new_flow_ping(vx, "net-2", a, vx.host("net-1").address)
        inside2, outside2 = (packets(r) for r in masq_rules(vx, "net-2")[:2])
        assert (inside2 - inside1, outside2 - outside1) == (0, 1)
    finally:
        vx.ov("net-2", "rm", "-f", a)
        vx.ov("net-1", "rm", "-f", b)


def test_masquerade_rules_restored_after_deletion(vx):
    want = [r["comment"] for r in masq_rules(vx, "net-3")]
    assert len(want) == 4
    assert vx.sh("net-3", "nft", "delete", "table", "ip", "overnet").returncode == 0
    t0 = time.monotonic()
    assert wait_until(lambda: [r["comment"] for r in masq_rules(vx, "net-3")] == want,
                      timeout=6)
    table = time.monotonic() - t0
    handle = masq_rules(vx, "net-3")[1]["handle"]
    assert vx.sh("net-3", "nft", "delete", "rule", "ip", "overnet", "postrouting", "handle",
                 str(handle)).returncode == 0
    t0 = time.monotonic()
    assert wait_until(lambda: [r["comment"] for r in masq_rules(vx, "net-3")] == want,
                      timeout=6)
    print(f"[flannel] masquerade table restored in {table:.1f} s, a deleted rule in "
          f"{time.monotonic() - t0:.1f} s")
    # the agent counts a restore once nft has answered: the rules may be visible a moment sooner
    assert wait_until(lambda: lease(vx, "net-3")["masq_restores"] >= 2, timeout=2)


def test_clean_shutdown_removes_masquerade_and_keeps_the_rest(vx):
    h = vx.host("net-3")
    before = lease(vx, "net-3")["subnet"], vxlan_state(vx, "net-3")
    _kill(h.agent_pid)                                   # SIGTERM: a clean shutdown
    try:
        assert masq_rules(vx, "net-3") == []
        assert vxlan_state(vx, "net-3") == before[1]     # traffic keeps flowing meanwhile
    finally:
        vx._start_agent(h)
        vx._wait_agent(h)
    assert lease(vx, "net-3")["subnet"] == before[0]
    assert len(masq_rules(vx, "net-3")) == 4


# --- links -----------------------------------------------------------------------------------

def test_link_to_a_container_on_another_hosts_bridge(vx):
    web = run(vx, "net-1", "--name", "fweb")
    other = run(vx, "net-3", "--name", "fother")
    app = run(vx, "net-3", "--link", "fweb:db")
    try:
        ip_web = ip_of(vx, "net-1", web)
        hosts = vx.ov("net-3", "exec", app, "cat", "/etc/hosts").stdout
        assert f"{ip_web}\tdb fweb" in hosts
        assert "fother" not in hosts                     # bridge peers are not listed
        assert "fweb" not in vx.ov("net-3", "exec", other, "cat", "/etc/hosts").stdout
        env = vx.ov("net-3", "exec", app, "env").stdout
        name = vx.inspect("net-3", app)["Name"]
        assert f"DB_NAME=/{name}/db" in env.splitlines()
        assert f"DB_IP={ip_web}" in env.splitlines()
        assert vx.ping("net-3", app, "db")
        bad = vx.ov("net-3", "run", "-d", "--link", "nosuch:x", "true", check=False)
        assert bad.returncode == 1 and "nosuch" in bad.stderr
        # one bridge network ID on every host; its endpoints are cluster-wide records
        net_id = vx.api("net-1").get("/networks/bridge")["id"]
        assert vx.api("net-3").get("/networks/bridge")["id"] == net_id
        keys = etcdctl(vx, "get", "--prefix", "--keys-only", f"/overnet/v1/endpoints/{net_id}/")
        assert len(keys.split()) == 3
    finally:
        for h, c in (("net-1", web), ("net-3", other), ("net-3", app)):
            vx.ov(h, "rm", "-f", c)
    left = etcdctl(vx, "get", "--prefix", "--keys-only", f"/overnet/v1/endpoints/{net_id}/")
    assert left.split() == []                            # removed with their containers


# --- host-gw ---------------------------------------------------------------------------------

def test_host_gw_routes_and_ping(gw):
    l1, l2 = lease(gw, "net-1"), lease(gw, "net-2")
    assert l1["subnet"] != l2["subnet"] and l1["mtu"] == 1500
    routes = gw.sh("net-1", "ip", "route").stdout
    assert f"{l2['subnet']} via {gw.host('net-2').address} dev eth0 proto 111" in routes
    assert "flannel" not in gw.sh("net-1", "ip", "link").stdout
    assert "FLANNEL_MTU=1500\n" in open(gw.host("net-1").run_dir + "/flannel/subnet.env").read()
    value = json.loads(etcdctl(gw, "get", f"{PREFIX}/subnets/{l1['subnet'].replace('/', '-')}",
                               "--print-value-only"))
    assert value == {"PublicIP": gw.host("net-1").address, "BackendType": "host-gw"}
    a = run(gw, "net-1")
    b = run(gw, "net-2")
    try:
        assert gw.ping("net-1", a, ip_of(gw, "net-2", b))
        assert "mtu 1500" in gw.ov("net-1", "exec", a, "ip", "link", "show", "eth0").stdout
    finally:
        gw.ov("net-1", "rm", "-f", a)
        gw.ov("net-2", "rm", "-f", b)


def test_host_gw_refuses_a_host_off_the_segment(gw):
    key = f"{PREFIX}/subnets/10.1.251.0-24"
    etcdctl(gw, "put", key, '{"PublicIP":"172.31.9.9","BackendType":"host-gw"}')
    try:
        assert wait_until(lambda: "10.1.251.0/24" in lease(gw, "net-1")["errors"], timeout=3)
        why = lease(gw, "net-1")["errors"]["10.1.251.0/24"]
        assert "L2 segment" in why and "172.31.9.9" in why
        assert "10.1.251.0" not in gw.sh("net-1", "ip", "route").stdout
        warn = gw.ov("net-1", "subnet", "lease").stderr
        assert "10.1.251.0/24 not programmed" in warn
    finally:
        etcdctl(gw, "del", key)
    assert wait_until(lambda: not lease(gw, "net-1")["errors"], timeout=3)


def test_subnet_config_cli(gw):
    shown = json.loads(gw.out("net-2", "subnet", "config"))
    assert shown["Backend"] == {"Type": "host-gw"} and shown["SubnetLen"] == 24
    for args, msg in ((["--network", "10.1.0.0"], "not an IPv4 CIDR"),
                      (["--network", "10.1.0.0/16", "--subnet-len", "31"], "less than /31"),
                      (["--network", "10.1.0.0/16", "--subnet-min", "10.1.1.7"],
                       "SubnetLen boundary"),
                      (["--network", "10.1.0.0/30"], "too small")):
        proc = gw.ov("net-2", "subnet", "config", *args, check=False)
        assert proc.returncode == 1 and msg in proc.stderr, proc.stderr
        assert re.match(r"Error: invalid network config: ", proc.stderr)
    # writing the same config again is accepted (and changes nothing)
    again = json.loads(gw.out("net-2", "subnet", "config", "--network", NETWORK,
                              "--backend", "host-gw"))
    assert again == shown
