"""Events, metrics, readiness and the doctor's logic, over whole agents on a MemoryStore and
FakeDataplanes (see test_agent.py's Cluster)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overnet.api import http as web
from overnet.errors import Invalid
from overnet.observe import doctor, health, metrics, path
from overnet.observe.events import EventLog
from overnet.observe.observer import Timings
from overnet.observe.routes import add_routes
from overnet.observe.serve import metrics_app, parse_addr
from tests.unit.test_agent import Cluster, attach

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    await c.stop()


async def settle(cluster: Cluster) -> None:
    await cluster.synced()
    await asyncio.sleep(0.05)


def kinds(agent, *types: str) -> list[tuple[str, str, str]]:
    return [(e.type, e.action, e.actor) for e in agent.events.select(types=set(types))]


def scrape(agent) -> dict[str, dict[tuple, float]]:
    text = metrics.exposition(metrics.registry(agent)).decode()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


# --- the event ring ------------------------------------------------------------------------

def test_ring_is_bounded_ordered_and_filtered():
    clock = iter(range(100, 200))
    log = EventLog("h1", size=5, clock=lambda: float(next(clock)))
    for i in range(8):
        log.emit("host" if i % 2 else "network", "up", f"x{i}")
    assert [e.seq for e in log.ring] == [4, 5, 6, 7, 8]          # the oldest fell out
    assert [e.actor for e in log.select(after=6)] == ["x6", "x7"]
    assert [e.actor for e in log.select(types={"host"})] == ["x3", "x5", "x7"]
    assert [e.seq for e in log.select(since=105, until=106)] == [6, 7]
    assert log.last == 8


async def test_wait_returns_at_the_first_matching_event():
    log = EventLog("h1")
    log.emit("host", "up", "old")
    waiter = asyncio.create_task(log.wait(log.last, 5, types={"lease"}))
    await asyncio.sleep(0.01)
    log.emit("host", "up", "ignored")
    await asyncio.sleep(0.01)
    assert not waiter.done()
    log.emit("lease", "acquired", "mine")
    got = await asyncio.wait_for(waiter, 1)
    assert [e.actor for e in got] == ["mine"]
    assert await log.wait(log.last, 0.01) == []


def test_timings_buckets_are_cumulative():
    t = Timings((0.1, 1.0))
    for s in (0.05, 0.5, 0.5, 3.0):
        t.observe(s)
    assert t.cumulative() == [("0.1", 1), ("1.0", 3), ("+Inf", 4)] and t.count == 4


# --- events from the agents ----------------------------------------------------------------

async def test_a_scripted_sequence_arrives_in_order(cluster):
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    h2 = await cluster.start("h2")
    await settle(cluster)
    a = await attach(h1, "web", "a", name="alpha")
    b = await attach(h2, "web", "b", name="beta")
    await settle(cluster)
    c = await attach(h2, "web", "c", name="gamma")
    await settle(cluster)
    await h2.endpoints.detach("b", "eth0")
    await settle(cluster)
    await cluster.crash("h2")
    await settle(cluster)
    seen = kinds(h1, "network", "peer", "host")
    # h1 hears of h2 once they share a network (the up, on its own watch, may come before
    # or after the peer's programming), and of its death last
    assert [e for e in seen if e[0] == "host"] == [("host", "up", "h2"), ("host", "down", "h2")]
    assert seen[-1] == ("host", "down", "h2")
    assert [e for e in seen if e[0] != "host"] == [
        ("network", "create", "web"), ("network", "attach", "web"),
        ("peer", "programmed", b.ip), ("peer", "programmed", c.ip),
        ("peer", "withdrawn", b.ip)]
    attach_ev = h1.events.select(types={"network"})[1]
    assert attach_ev.attrs["runtime"] == "cni" and attach_ev.attrs["ip"] == a.ip
    assert ("lease", "acquired", "h1") in kinds(h1, "lease")
    seqs = [e.seq for e in h1.events.ring]
    assert seqs == sorted(seqs)


async def test_a_host_leaving_a_network_has_not_gone_down(cluster):
    h1, h2 = await cluster.hosts(2)
    await h1.networks.create("web")
    await attach(h1, "web", "a")
    await attach(h2, "web", "b")
    await settle(cluster)
    await h2.endpoints.detach("b", "eth0")
    await settle(cluster)
    assert kinds(h1, "host") == [("host", "up", "h2")]


async def test_network_removal_is_an_event_on_every_host(cluster):
    h1, h2 = await cluster.hosts(2)
    await h1.networks.create("web")
    await settle(cluster)
    await h2.networks.remove(h2.networks.find("web").id)
    await settle(cluster)
    for agent in (h1, h2):
        assert kinds(agent, "network") == [("network", "create", "web"),
                                           ("network", "destroy", "web")]


# --- metrics -------------------------------------------------------------------------------

async def test_collector_reads_the_agent(cluster):
    h1, h2 = await cluster.hosts(2)
    await h1.networks.create("web")
    await settle(cluster)
    await attach(h1, "web", "a")
    await attach(h2, "web", "b")
    await attach(h2, "web", "c")
    await settle(cluster)
    m = scrape(h1)
    assert m["overnet_cluster_num_hosts"][(("state", "alive"),)] == 2
    assert m["overnet_active_local_endpoints"][(("network", "web"), ("runtime", "cni"))] == 1
    assert m["overnet_remote_peers"][(("network", "web"),)] == 2
    assert m["overnet_store_requests_total"][(("operation", "txn"), ("result", "ok"))] > 0
    assert m["overnet_reconcile_seconds_count"][()] > 0
    assert m["overnet_resync_state"][()] == 3
    assert m["overnet_store_networks_in_scope"][()] == 1
    assert (("loop", "reconcile"),) in m["overnet_loop_restarts_total"]
    await h2.endpoints.detach("c", "eth0")
    await settle(cluster)
    assert scrape(h1)["overnet_remote_peers"][(("network", "web"),)] == 1


async def test_store_errors_are_counted_by_result(cluster):
    (h1,) = await cluster.hosts(1)
    store = metrics.CountingStore(h1.store.inner)

    async def broken(*a, **kw):
        raise ConnectionError("down")
    store.inner = type("Broken", (), {"get": broken})()
    with pytest.raises(ConnectionError):
        await store.get("/x")
    assert store.requests == {("get", "ConnectionError"): 1}


async def test_metrics_app_serves_text_and_readiness(cluster):
    (h1,) = await cluster.hosts(1)
    routes = metrics_app(h1)
    handler, _, _ = routes.find("GET", "/metrics")
    resp = await handler(web.Request("GET", "/metrics", {}))
    assert b"overnet_cluster_num_hosts" in resp.body and "text/plain" in resp.content_type
    handler, _, _ = routes.find("GET", "/readyz")
    assert (await handler(web.Request("GET", "/readyz", {}))).status == 200
    h1.mirror.mirrors()[0].state = "resyncing"
    r = await health.readiness(h1)
    assert not r["ready"] and "resyncing" in r["checks"]["sync"]
    with pytest.raises(Invalid, match="'nowhere'"):
        parse_addr("nowhere")


# --- doctor --------------------------------------------------------------------------------

class FakeProbes:
    """Probes that answer as told (and send nothing anywhere)."""

    def __init__(self, host: bool = True, mtu: bool = True, live: bool = True,
                 vxlan: bool | str = True) -> None:
        self.host, self.mtu, self.live, self.vxlan = host, mtu, live, vxlan
        self.sent: list[tuple[str, int, int]] = []

    async def ping_host(self, address, size=None):
        return (self.mtu if size else self.host), "told so"

    async def ping_from(self, netns, address):
        return self.live, "told so"

    async def vxlan_send(self, vtep, port, vni, nonce, seconds):
        self.sent.append((vtep, port, vni))

    async def vxlan_heard(self, ns_path, nonce, seconds):
        return self.vxlan


async def two_hosts(cluster, remote: FakeProbes | None = None):
    """h1 with alpha, h2 with beta on network web; each answers doctor requests with fake
    probes (`remote` for h2)."""
    h1, h2 = await cluster.hosts(2)
    for agent, probes in ((h1, FakeProbes()), (h2, remote or FakeProbes())):
        add_routes(web.RouteTableDef(), agent)
        agent.observer.on_doctor = \
            lambda key, value, agent=agent, probes=probes: path.answer(agent, key, value, probes)
    await h1.networks.create("web")
    await settle(cluster)
    a = await attach(h1, "web", "a", name="alpha")
    b = await attach(h2, "web", "b", name="beta")
    await settle(cluster)
    return h1, h2, a, b


def failed(found) -> list[str]:
    return [f.hop for f in found if not f.ok]


async def test_host_doctor_names_kernel_drift(cluster):
    h1, _h2, _a, b = await two_hosts(cluster)
    assert failed(await doctor.check_host(h1)) == []
    net = h1.networks.find("web")
    ns = h1.networks.driver(net).namespace(net)
    h1.dp.remove_fdb(ns, b.mac)
    h1.dp.link(ns, "vxlan0").mtu = 1400
    found = await doctor.check_host(h1)
    assert failed(found) == ["network web: vxlan0", "network web: eth0 of alpha"]
    assert "mtu 1400 (should be 1450)" in found[[f.hop for f in found].index(
        "network web: vxlan0")].detail
    assert any(b.ip in f.detail and "not programmed" in f.detail for f in found)


async def test_path_is_good_end_to_end(cluster):
    h1, _h2, a, b = await two_hosts(cluster)
    found = await path.walk(h1, "alpha", "beta", FakeProbes())
    assert failed(found) == []
    hops = [f.hop for f in found]
    assert "h2: vxlan0 entries for " + a.ip in hops           # h2's half, through the store
    assert "h1: vxlan0 entries for " + b.ip in hops
    assert any(h.startswith("VXLAN (UDP 4789)") for h in hops)


async def test_path_names_the_remote_missing_entry(cluster):
    h1, h2, a, b = await two_hosts(cluster)
    net = h2.networks.find("web")
    h2.dp.remove_fdb(h2.networks.driver(net).namespace(net), a.mac)
    found = await path.walk(h1, "alpha", "beta", FakeProbes(live=False))
    assert failed(found) == [f"h2: vxlan0 entries for {a.ip}",
                             "live probe: ping alpha → beta (" + b.ip + ")"]


async def test_path_names_the_blocked_direction_of_udp_4789(cluster):
    far = FakeProbes(vxlan=False)                  # h2 hears no probe frame from h1
    h1, _h2, _a, b = await two_hosts(cluster, far)
    here = FakeProbes(live=False)
    found = await path.walk(h1, "alpha", "beta", here)
    assert failed(found) == ["VXLAN (UDP 4789) 192.168.9.1 → 192.168.9.2",
                             f"live probe: ping alpha → beta ({b.ip})"]
    assert "VXLAN (UDP 4789) 192.168.9.2 → 192.168.9.1" in [f.hop for f in found if f.ok]
    vni = h1.networks.find("web").vni
    assert here.sent == [("192.168.9.2", 4789, vni)] and far.sent == [("192.168.9.1", 4789, vni)]


async def test_path_infers_udp_4789_when_it_cannot_probe(cluster):
    h1, _h2, _a, _b = await two_hosts(cluster, FakeProbes(vxlan="cannot listen"))
    found = await path.walk(h1, "alpha", "beta", FakeProbes(live=False, vxlan="cannot listen"))
    assert failed(found)[-1].startswith("VXLAN (UDP 4789)") and "blocked" in found[-1].detail
    found = await path.walk(h1, "alpha", "beta", FakeProbes(host=False, live=False,
                                                            vxlan="cannot listen"))
    assert failed(found)[0].startswith("underlay ") and not \
        failed(found)[-1].startswith("VXLAN")


async def test_path_with_the_remote_agent_down(cluster):
    h1, _h2, _a, _b = await two_hosts(cluster)
    await cluster.crash("h2")
    await settle(cluster)
    found = await path.walk(h1, "alpha", "beta", FakeProbes())
    assert failed(found) == ["host h2: agent"]


async def test_path_with_unknown_containers(cluster):
    h1, _h2, _a, _b = await two_hosts(cluster)
    found = await path.walk(h1, "alpha", "nobody", FakeProbes())
    assert [(f.hop, f.ok) for f in found] == [("container nobody", False)]


# --- topology, graph and the CLI's parsing ---------------------------------------------------

async def test_topology_and_its_dot_source(cluster):
    h1, _h2, a, b = await two_hosts(cluster)
    await cluster.crash("h2")
    await settle(cluster)
    from overnet.observe import graph
    from overnet.observe.topology import topology
    topo = await topology(h1)
    assert [(h["name"], h["alive"]) for h in topo["hosts"]] == [("h1", True), ("h2", False)]
    assert [n["name"] for n in topo["networks"]] == ["web"]
    assert {(e["name"], e["ip"], e["host"]) for e in topo["endpoints"]} == \
        {("alpha", a.ip, "h1"), ("beta", b.ip, "h2")}
    assert topo["tunnels"] == [{"network": "web", "vni": h1.networks.find("web").vni,
                                "hosts": ["h1", "h2"]}]
    dot = graph.render(topo, "dot").decode()
    assert '"host/h1" -- "host/h2"' in dot and "DOWN" in dot and a.ip in dot


def test_cli_parses_durations_filters_and_prints_events():
    from overnet.cli.main import Failure
    from overnet.cli.observe import parse_duration, parse_filters, show_event
    assert parse_duration("90s", "--since") == 90 and parse_duration("2h", "--since") == 7200
    assert parse_filters(("type=peer", "type=host")) == "peer,host"
    with pytest.raises(Failure, match="'soon'"):
        parse_duration("soon", "--since")
    with pytest.raises(Failure, match="'kind=peer'"):
        parse_filters(("kind=peer",))
    line = show_event({"time": 0.5, "type": "peer", "action": "programmed", "actor": "10.0.0.2",
                       "host": "h1", "attrs": {"network": "web"}}, None)
    assert line == "1970-01-01T00:00:00.500000Z peer programmed 10.0.0.2 (host=h1, network=web)"


async def test_events_route_long_polls_and_checks_its_query(cluster):
    (h1,) = await cluster.hosts(1)
    routes = web.RouteTableDef()
    add_routes(routes, h1)
    handler, _, _ = routes.find("GET", "/events")

    async def get(**query):
        resp = await handler(web.Request("GET", "/events", {k: str(v) for k, v in query.items()}))
        import json
        return json.loads(resp.body)
    now = await get(until=0)            # where `overnet events` starts following
    assert now["events"] == [] and now["last"] == h1.events.last > 0
    last = now["last"]
    poll = asyncio.create_task(get(after=last, wait=5, type="network"))
    await asyncio.sleep(0.02)
    await h1.networks.create("web")
    got = await asyncio.wait_for(poll, 2)
    assert [(e["action"], e["actor"]) for e in got["events"]] == [("create", "web")]
    assert got["last"] == got["events"][-1]["seq"]
    with pytest.raises(Invalid, match="'nope'"):
        await get(type="nope")
    with pytest.raises(Invalid, match="'soon'"):
        await get(since="soon")


async def test_host_doctor_checks_host_subnet_routes(cluster):
    h1, h2 = await cluster.hosts(2, flannel_network="10.5.0.0/16")
    await settle(cluster)
    await h1.hostsubnet.reconcile("", False)       # h2's lease is programmed now
    hops = {f.hop: f for f in await doctor.check_host(h1)}
    peer = f"host subnet {h2.hostsubnet.subnet} (via {h2.cfg.advertise})"
    assert hops["subnet lease"].ok and hops[peer].ok
    device = h1.hostsubnet.backend.device
    h1.dp.link(None, device).fdb.clear()
    hops = {f.hop: f for f in await doctor.check_host(h1)}
    assert not hops[peer].ok and "FDB entry missing" in hops[peer].detail


async def test_path_steps_stream_progress_then_findings(cluster):
    h1, _h2, _a, _b = await two_hosts(cluster)
    steps = [s async for s in path.steps(h1, "alpha", "beta", FakeProbes())]
    progress = [s for s in steps if isinstance(s, str)]
    assert progress[0].startswith("asking the agent of h2") or \
        progress[0].startswith("probing the underlay")
    assert steps.index(progress[-1]) == len(steps) - 2          # the live probe comes last
    assert [f.hop for f in steps if not isinstance(f, str)] == \
        [f.hop for f in await path.walk(h1, "alpha", "beta", FakeProbes())]


def test_streamed_response_reaches_the_cli_line_by_line(tmp_path):
    from overnet.api.client import ApiError
    from overnet.cli.observe import stream_lines
    from tests.unit.http_helper import serving, thing_routes
    routes = thing_routes()

    @routes.get("/count")
    async def count(request):
        async def lines():
            for i in range(3):
                await asyncio.sleep(0.01)
                yield b'{"n": %d}\n' % i
        return web.Response(stream=lines(), content_type="application/x-ndjson")

    sock = str(tmp_path / "api.sock")
    with serving(sock, routes):
        assert list(stream_lines(sock, "/count")) == [{"n": 0}, {"n": 1}, {"n": 2}]
        with pytest.raises(ApiError, match="no such thing: ghost"):
            list(stream_lines(sock, "/things/ghost"))


async def test_metrics_address_serves_over_tcp_until_the_agent_stops(cluster):
    import socket as sk

    from overnet.observe.serve import serve_metrics
    (h1,) = await cluster.hosts(1)
    with sk.socket() as s:                       # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await serve_metrics(h1, f"127.0.0.1:{port}")

    async def get(path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data
    assert b"200 OK" in await get("/readyz") and b"overnet_resync_state 3.0" in \
        await get("/metrics")
    with pytest.raises(Invalid, match="cannot listen"):
        await serve_metrics(h1, f"127.0.0.1:{port}")       # taken: one clear line
    await cluster.stop()
    cluster.agents.clear()
    with pytest.raises(OSError):
        await get("/healthz")
