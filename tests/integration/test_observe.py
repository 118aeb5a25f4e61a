"""Metrics, readiness, events and the doctor against a real two-host sandbox lab: real etcd,
real agents, real kernels; faults made on purpose (an FDB entry deleted, an MTU changed,
UDP 4789 dropped with nftables inside a lab host, a remote agent stopped)."""

from __future__ import annotations

import json
import secrets
import signal
import sys
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overnet.api.client import ApiError
from overnet.observe import SANDBOX_ADDR
from tests.labfixture import keep_logs, make_lab, wait_until

pytestmark = pytest.mark.timeout(300)

FETCH = ("import sys, urllib.request, urllib.error\n"
         "try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
         "    print(r.status); sys.stdout.write(r.read().decode())\n"
         "except urllib.error.HTTPError as e:\n    print(e.code); sys.stdout.write(e.read().decode())\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    # No periodic resync: a fault made on purpose stays until the test undoes it.
    the_lab = make_lab(str(root), agent_args=["--metrics-addr", SANDBOX_ADDR,
                                              "--resync-every", "3600"])
    try:
        yield the_lab
    finally:
        keep_logs(the_lab, str(root) + "-logs")
        the_lab.down(quiet=True)


@pytest.fixture(scope="module")
def net(lab):
    """Network `obs` with container c on net-1 and d on net-2."""
    name = f"obs{secrets.token_hex(2)}"
    lab.ov("net-1", "network", "create", name)
    for host, c in (("net-1", "c"), ("net-2", "d")):
        lab.ov(host, "run", "-d", "--net", name, "--name", c, "sleep", "1000")
    assert wait_until(lambda: lab.ping("net-1", "c", lab.inspect("net-2", "d")
                                       ["NetworkSettings"]["IPAddress"]), timeout=10)
    return name


def fetch(lab, host: str, path: str) -> tuple[int, str]:
    port = SANDBOX_ADDR.rsplit(":", 1)[1]
    url = f"http://{lab.host(host).address}:{port}{path}"
    out = lab.sh(host, sys.executable, "-c", FETCH, url).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def samples(lab, host: str) -> dict[str, dict[tuple, float]]:
    status, text = fetch(lab, host, "/metrics")
    assert status == 200
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def peers(lab, host: str, network: str) -> float:
    return samples(lab, host).get("overnet_remote_peers", {}).get((("network", network),), 0)


def ip_of(lab, host: str, container: str) -> str:
    return lab.inspect(host, container)["NetworkSettings"]["IPAddress"]


def overlay_ns(lab, host: str, network: str) -> str:
    return json.loads(lab.out(host, "network", "inspect", network))[0]["namespace"]


def doctor(lab, host: str, *args: str):
    return lab.ov(host, "doctor", *args, check=False)


# --- metrics and readiness -----------------------------------------------------------------

def in_scope(lab, host: str) -> float:
    return samples(lab, host)["overnet_store_networks_in_scope"][()]


def test_a_host_reads_a_network_it_has_no_container_on_only_when_asked(lab, net):
    """Each agent's copy of the store holds the networks it has containers on; another is
    listed from etcd when the API reads it (`network inspect`), then watched a while."""
    name = f"scp{secrets.token_hex(2)}"
    lab.ov("net-1", "network", "create", name)
    lab.ov("net-1", "run", "-d", "--net", name, "--name", "only1", "sleep", "1000")
    try:
        before = in_scope(lab, "net-2")
        assert in_scope(lab, "net-1") >= 2                 # `net` and this one
        seen = json.loads(lab.out("net-2", "network", "inspect", name))[0]["containers"]
        assert [(c["name"], c["host"]) for c in seen] == [("only1", "net-1")]
        assert in_scope(lab, "net-2") == before + 1
        lab.ov("net-1", "run", "-d", "--net", name, "--name", "only2", "sleep", "1000")
        names = lambda: sorted(c["name"] for c in json.loads(         # noqa: E731
            lab.out("net-2", "network", "inspect", name))[0]["containers"])
        assert wait_until(lambda: names() == ["only1", "only2"], timeout=10)
    finally:
        lab.ov("net-1", "rm", "-f", "only1", "only2", check=False)
        lab.ov("net-1", "network", "rm", name, check=False)


def test_metrics_parse_and_move_when_containers_come_and_go_elsewhere(lab, net):
    m = samples(lab, "net-1")
    assert m["overnet_cluster_num_hosts"][(("state", "alive"),)] == 2
    assert m["overnet_active_local_endpoints"][(("network", net), ("runtime", "overnet"))] == 1
    assert m["overnet_resync_state"][()] == 3
    reconciles = m["overnet_reconcile_seconds_count"][()]
    assert peers(lab, "net-1", net) == 1
    lab.ov("net-2", "run", "-d", "--net", net, "--name", "e", "sleep", "1000")
    assert wait_until(lambda: peers(lab, "net-1", net) == 2, timeout=10)
    lab.ov("net-2", "rm", "-f", "e")
    assert wait_until(lambda: peers(lab, "net-1", net) == 1, timeout=10)
    after = samples(lab, "net-2")["overnet_store_requests_total"]
    assert after[(("operation", "txn"), ("result", "ok"))] > 0      # net-2 wrote e's records
    assert samples(lab, "net-1")["overnet_reconcile_seconds_count"][()] >= reconciles + 2
    assert fetch(lab, "net-1", "/healthz")[0] == 200


def test_readyz_is_503_while_the_store_is_down(lab, net):
    assert fetch(lab, "net-1", "/readyz")[0] == 200
    assert lab.api("net-1").get("/readyz")["ready"] is True
    stopper = threading.Thread(target=lab.restart_store, kwargs={"down_for": 6})
    stopper.start()
    try:
        assert wait_until(lambda: fetch(lab, "net-1", "/readyz")[0] == 503, timeout=6)
        with pytest.raises(ApiError) as e:
            lab.api("net-1").get("/readyz")
        assert e.value.status == 503
    finally:
        stopper.join()
    assert wait_until(lambda: fetch(lab, "net-1", "/readyz")[0] == 200, timeout=20)


# --- events --------------------------------------------------------------------------------

def test_events_arrive_in_order_across_two_hosts(lab, net):
    stream: list[str] = []
    follow = threading.Thread(target=lambda: stream.append(lab.sh(
        "net-1", "timeout", "8", "overnet", "events", "--since", "1s", "--format", "json",
        "--filter", "type=peer").stdout))      # --since: replay what came before it listened
    follow.start()
    lab.ov("net-2", "run", "-d", "--net", net, "--name", "f", "sleep", "1000")
    f_ip = ip_of(lab, "net-2", "f")

    def seen() -> list[tuple[str, str, str]]:
        """f's peer events on net-1, replayed (its address may have served another before)."""
        out = lab.out("net-1", "events", "--since", "5m", "--until", "0s", "--format", "json",
                      "--filter", "type=peer")
        return [(e["type"], e["action"], e["actor"]) for e in map(json.loads,
                                                                   out.splitlines())
                if e["actor"] == f_ip]
    assert wait_until(lambda: seen()[-1:] == [("peer", "programmed", f_ip)], timeout=10)
    lab.ov("net-2", "rm", "-f", "f")
    want = [("peer", "programmed", f_ip), ("peer", "withdrawn", f_ip)]
    assert wait_until(lambda: seen()[-2:] == want, timeout=10)
    follow.join()
    streamed = [json.loads(line) for line in stream[0].splitlines()]
    assert [(e["action"], e["actor"]) for e in streamed if e["actor"] == f_ip] == \
        [("programmed", f_ip), ("withdrawn", f_ip)]
    replay = lab.out("net-2", "events", "--since", "5m", "--until", "0s")
    assert "container start f" in replay and "container die f" in replay
    assert "network attach" in replay and "runtime=overnet" in replay


# --- doctor --------------------------------------------------------------------------------

def test_doctor_is_happy_when_all_is_well(lab, net):
    for host in ("net-1", "net-2"):
        r = doctor(lab, host)
        assert r.returncode == 0, r.stdout
    r = doctor(lab, "net-1", "c", "d")
    assert r.returncode == 0, r.stdout
    one, two = lab.host("net-1").address, lab.host("net-2").address
    for src, dst in ((one, two), (two, one)):        # probe frames crossed both ways
        assert f"✔ VXLAN (UDP 4789) {src} → {dst}" in r.stdout, r.stdout
    assert "✔ net-2: vxlan0 entries for" in r.stdout


def test_doctor_names_a_deleted_fdb_entry(lab, net):
    c = lab.inspect("net-1", "c")["NetworkSettings"]["MacAddress"]
    ns = overlay_ns(lab, "net-2", net)
    fdb = ["nsenter", f"--net={ns}", "bridge", "fdb"]
    assert lab.sh("net-2", *fdb, "del", c, "dev", "vxlan0").returncode == 0
    try:
        r = doctor(lab, "net-1", "c", "d")
        assert r.returncode == 1
        bad = [ln for ln in r.stdout.splitlines() if ln.startswith("✘")]
        assert bad[0] == f"✘ net-2: vxlan0 entries for {ip_of(lab, 'net-1', 'c')}: no FDB + " \
            f"neighbour entry, should be {c} {ip_of(lab, 'net-1', 'c')} via " \
            f"{lab.host('net-1').address}", r.stdout
        assert "✘ network" in doctor(lab, "net-2").stdout      # net-2's own check sees it too
    finally:
        lab.sh("net-2", *fdb, "replace", c, "dev", "vxlan0", "dst", lab.host("net-1").address,
               "self", "permanent")
    assert doctor(lab, "net-2").returncode == 0


def test_doctor_names_a_changed_mtu(lab, net):
    ns = overlay_ns(lab, "net-1", net)
    lab.sh("net-1", "nsenter", f"--net={ns}", "ip", "link", "set", "vxlan0", "mtu", "1400")
    try:
        r = doctor(lab, "net-1")
        assert r.returncode == 1 and f"✘ network {net}: vxlan0: mtu 1400" in r.stdout, r.stdout
    finally:
        # the kernel took vxlan0's macvlans down with it (gw0 and c's eth0): all three go back
        key = lab.inspect("net-1", "c")["NetworkSettings"]["SandboxKey"]
        for where, dev in ((ns, "vxlan0"), (ns, "gw0"), (key, "eth0")):
            lab.sh("net-1", "nsenter", f"--net={where}", "ip", "link", "set", dev, "mtu", "1450")


def test_doctor_names_udp_4789_dropped_on_the_underlay(lab, net):
    table = f"ovt{secrets.token_hex(3)}"
    nft = ["nft", "add", "chain", "inet", table, "in",
           "{ type filter hook input priority 0 ; }"]
    assert lab.sh("net-2", "nft", "add", "table", "inet", table).returncode == 0
    try:
        assert lab.sh("net-2", *nft).returncode == 0
        assert lab.sh("net-2", "nft", "add", "rule", "inet", table, "in", "udp", "dport",
                      "4789", "drop").returncode == 0
        r = doctor(lab, "net-1", "c", "d")
        assert r.returncode == 1
        one, two = lab.host("net-1").address, lab.host("net-2").address
        bad = [ln for ln in r.stdout.splitlines() if ln.startswith("✘")]
        assert len(bad) == 2, r.stdout          # the blocked direction, and so the ping
        assert bad[0].startswith(f"✘ VXLAN (UDP 4789) {one} → {two}: blocked"), r.stdout
        assert bad[1].startswith("✘ live probe"), r.stdout
        assert f"✔ VXLAN (UDP 4789) {two} → {one}" in r.stdout
    finally:
        lab.sh("net-2", "nft", "delete", "table", "inet", table)


def test_doctor_names_a_stopped_remote_agent(lab, net):
    h = lab.host("net-2")
    from overnet.sandbox.lab import _kill
    _kill(h.agent_pid)
    try:
        r = doctor(lab, "net-1", "c", "d")
        assert r.returncode == 1 and "✘ host net-2: agent" in r.stdout, r.stdout
    finally:
        lab.restart_agent("net-2", signal.SIGTERM)


# --- graph ---------------------------------------------------------------------------------

def svg_texts(svg: str) -> tuple[set[str], str]:
    import xml.etree.ElementTree as ET
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    titles = {t.text for g in root.iter(f"{ns}g") if g.get("class") == "node"
              for t in g.iter(f"{ns}title")}
    return titles, " ".join(t.text or "" for t in root.iter(f"{ns}text"))


def test_graph_draws_every_host_network_and_endpoint(lab, net):
    svg = lab.out("net-1", "graph")
    titles, text = svg_texts(svg)
    topo = lab.api("net-2").get("/topology")
    for h in topo["hosts"]:
        assert f"host/{h['name']}" in titles and h["address"] in text
    for n in topo["networks"]:
        assert f"net/{n['name']}" in titles and n["name"] in text
    names = {e["name"] for e in topo["endpoints"]}
    assert {"c", "d"} <= names
    for e in topo["endpoints"]:
        assert f"ep/{e['host']}/{e['container']}/{e['network']}" in titles
        assert e["name"] in text and e["ip"] in text
    assert any(t["network"] == net and sorted(t["hosts"]) == ["net-1", "net-2"]
               for t in topo["tunnels"])
    assert f"{net} (vni" in text
    png = lab.sh("net-1", "overnet", "graph", "--format", "png", "-o", "/run/g.png")
    assert png.returncode == 0
    with open(lab.host("net-1").run_dir + "/g.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
