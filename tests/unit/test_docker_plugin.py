"""The Docker plugin's request/response JSON for every method, over whole agents (MemoryStore
+ FakeDataplane, as in test_agent.py), with dockerd's side played by the test: it calls the
methods in the order Docker 20.10 does and keeps what dockerd's API would answer."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest

from overnet.agent.endpoints import AttachRequest
from overnet.docker.bindings import NAMED, PENDING, is_placeholder
from overnet.docker.driver import handover_name
from overnet.docker.server import DockerPlugin
from overnet.store import keys
from tests.unit.test_agent import Cluster, netns

GW = {"RequestAddressType": "com.docker.network.gateway"}


class FakeDockerd:
    """What the plugin asks dockerd: its networks, as GET /networks answers."""

    socket_path = "/fake/docker.sock"

    def __init__(self) -> None:
        self.nets: dict[str, dict] = {}
        self.containers: dict[str, dict] = {}

    async def network(self, net_id: str) -> dict | None:
        return self.nets.get(net_id)

    async def container(self, cid: str) -> dict | None:
        return self.containers.get(cid)

    def started(self, net_id: str, ep_id: str, name: str) -> str:
        """A container started: dockerd lists it on its network, with its aliases."""
        cid = secrets.token_hex(32)
        net = self.nets[net_id]
        net.setdefault("Containers", {})[cid] = {"EndpointID": ep_id, "Name": name}
        self.containers[cid] = {"Id": cid, "Name": "/" + name, "NetworkSettings": {
            "Networks": {net["Name"]: {"Aliases": [cid[:12], "al.ias", "web-alias"]}}}}
        return cid

    async def networks(self) -> list[dict]:
        return list(self.nets.values())


class Host:
    """One host: its agent, its plugin, its dockerd."""

    def __init__(self, agent, dockerd: FakeDockerd | None = None) -> None:
        self.agent = agent
        self.dockerd = dockerd or FakeDockerd()
        self.plugin = DockerPlugin(agent)
        self.plugin.bindings.docker = self.dockerd
        self.sandboxes: dict[str, tuple[str, str]] = {}   # endpoint -> (sandbox, SrcName)

    async def call(self, method: str, body: dict | None = None) -> dict:
        answer = await self.plugin.call(method, body)
        json.dumps(answer)     # what goes to Docker must be JSON
        return answer

    async def ok(self, method: str, body: dict | None = None) -> dict:
        answer = await self.call(method, body)
        assert not answer.get("Err"), answer
        return answer

    async def network_create(self, name: str, opts: dict | None = None,
                             ipam_opts: dict | None = None, driver: str = "overnet"
                             ) -> tuple[str, dict]:
        """`docker network create -d overnet --ipam-driver overnet [-o ..] [--ipam-opt ..]`"""
        pool = await self.ok("IpamDriver.RequestPool", {
            "AddressSpace": "overnet", "Pool": "", "SubPool": "", "Options": ipam_opts or {},
            "V6": False})
        gw = await self.ok("IpamDriver.RequestAddress", {
            "PoolID": pool["PoolID"], "Address": "", "Options": GW})
        net_id = secrets.token_hex(32)
        if driver == "overnet":     # else one of dockerd's own drivers makes it
            await self.ok("NetworkDriver.CreateNetwork", {
                "NetworkID": net_id, "Options": {"com.docker.network.enable_ipv6": False,
                                                 "com.docker.network.generic": opts or {}},
                "IPv4Data": [{"AddressSpace": "overnet", "Gateway": gw["Address"],
                              "Pool": pool["Pool"]}], "IPv6Data": []})
        self.dockerd.nets[net_id] = {   # dockerd stores it once the driver agreed
            "Id": net_id, "Name": name, "Driver": driver, "Options": opts or {},
            "IPAM": {"Driver": "overnet", "Config": [{"Subnet": pool["Pool"]}]}}
        return net_id, {**pool, "gateway": gw["Address"]}

    async def run(self, net_id: str, pool_id: str, name: str = "") -> tuple[str, dict]:
        """`docker run --network NET`: address, endpoint, sandbox, join, then Docker moves
        the handed-over device into the sandbox as eth0."""
        addr = await self.ok("IpamDriver.RequestAddress", {
            "PoolID": pool_id, "Address": "", "Options": None})
        ep_id = secrets.token_hex(32)
        created = await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": net_id, "EndpointID": ep_id,
            "Interface": {"Address": addr["Address"], "AddressIPv6": "", "MacAddress": ""},
            "Options": {}})
        sandbox = await netns(self.agent, ep_id[:12])
        joined = await self.ok("NetworkDriver.Join", {
            "NetworkID": net_id, "EndpointID": ep_id, "SandboxKey": sandbox, "Options": {}})
        src = joined["InterfaceName"]["SrcName"]
        self.agent.dp.move_link(None, src, sandbox, "eth0")
        self.sandboxes[ep_id] = (sandbox, src)
        eth0 = self.agent.dp.link(sandbox, "eth0")
        eth0.addresses, eth0.up = [addr["Address"]], True
        await self.ok("NetworkDriver.ProgramExternalConnectivity", {
            "NetworkID": net_id, "EndpointID": ep_id, "Options": {}})
        cid = self.dockerd.started(net_id, ep_id, name) if name else ""
        return ep_id, {"cid": cid, "address": addr["Address"], "created": created, "joined": joined,
                       "sandbox": sandbox}

    async def rm(self, net_id: str, pool_id: str, ep_id: str, address: str) -> None:
        """`docker rm -f`: revoke, leave (Docker moves the device back), delete, release."""
        ids = {"NetworkID": net_id, "EndpointID": ep_id}
        await self.ok("NetworkDriver.RevokeExternalConnectivity", ids)
        sandbox, src = self.sandboxes.pop(ep_id)
        self.agent.dp.move_link(sandbox, "eth0", None, src)
        await self.ok("NetworkDriver.Leave", ids)
        await self.ok("NetworkDriver.DeleteEndpoint", ids)
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id,
                                                    "Address": address.split("/")[0]})


async def unix_request(path: str, method: str, target: str, body: bytes) -> tuple[int, bytes]:
    """One exchange as dockerd's plugin client makes it."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: \r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    await c.stop()


async def hosts(cluster, n: int = 2) -> list[Host]:
    return [Host(a) for a in await cluster.hosts(n)]


# --- handshake -------------------------------------------------------------------------------

async def test_activate_and_capabilities(cluster):
    (h,) = await hosts(cluster, 1)
    assert await h.ok("Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}
    caps = await h.ok("NetworkDriver.GetCapabilities")
    assert caps["Scope"] == "local" and caps["ConnectivityScope"] == "global"
    assert await h.ok("IpamDriver.GetCapabilities") == {"RequiresMACAddress": False,
                                                        "RequiresRequestReplay": False}
    spaces = await h.ok("IpamDriver.GetDefaultAddressSpaces")
    assert set(spaces) == {"LocalDefaultAddressSpace", "GlobalDefaultAddressSpace"}
    for m in ("DiscoverNew", "DiscoverDelete"):
        assert await h.ok(f"NetworkDriver.{m}", {"DiscoveryType": 1, "DiscoveryData": {}}) == {}
    assert "unknown method" in (await h.call("NetworkDriver.Nope"))["Err"]


# --- networks --------------------------------------------------------------------------------

async def test_same_name_on_two_hosts_is_one_overnet_network(cluster):
    h1, h2 = await hosts(cluster)
    d1, p1 = await h1.network_create("web")
    d2, _ = await h2.network_create("web")
    assert p1["PoolID"].startswith(PENDING) and is_placeholder(p1["Pool"])
    assert p1["gateway"].endswith("/28")
    # The network is made once dockerd knows its name (asked in the background) ...
    for _ in range(50):
        if any(n.name == "web" for n in h1.agent.networks.all()):
            break
        await asyncio.sleep(0.1)
    await cluster.synced()
    web = h1.agent.networks.find("web")
    assert h2.agent.networks.find("web").id == web.id and web.driver == "overlay"
    # ... and both hosts' Docker networks resolve to it.
    assert (await h1.plugin.bindings.network(d1)).id == (await h2.plugin.bindings.network(d2)).id


async def test_option_maps_another_name_and_ipam_opt_gives_the_real_subnet(cluster):
    (h,) = await hosts(cluster, 1)
    d, _ = await h.network_create("front", opts={"overnet.network": "shared"})
    shared = h.agent.networks.find("shared")       # made at CreateNetwork, no waiting
    assert (await h.plugin.bindings.network(d)).id == shared.id
    _, named = await h.network_create("other", ipam_opts={"overnet.network": "shared"},
                                      opts={"overnet.network": "shared"})
    assert named["PoolID"] == NAMED + "shared" and named["Pool"] == shared.subnet
    assert named["gateway"] == f"{shared.gateway}/{shared.network.prefixlen}"
    again = await h.ok("IpamDriver.RequestPool", {"Pool": shared.subnet, "Options": {}})
    assert again["PoolID"] == NAMED + "shared"     # --subnet of an existing network


async def test_docker_network_rm_keeps_the_cluster_network(cluster):
    h1, h2 = await hosts(cluster)
    d1, p1 = await h1.network_create("web", opts={"overnet.network": "web"})
    await h1.ok("IpamDriver.ReleaseAddress", {"PoolID": p1["PoolID"],
                                              "Address": p1["gateway"].split("/")[0]})
    await h1.ok("IpamDriver.ReleasePool", {"PoolID": p1["PoolID"]})
    await h1.ok("NetworkDriver.DeleteNetwork", {"NetworkID": d1})
    await cluster.synced()
    assert h2.agent.networks.find("web").name == "web"


async def test_network_errors_name_the_bad_value(cluster):
    (h,) = await hosts(cluster, 1)
    bad = {"NetworkID": "nope", "Options": {}, "IPv4Data": [], "IPv6Data": []}
    assert "invalid NetworkID 'nope'" in (await h.call("NetworkDriver.CreateNetwork", bad))["Err"]
    foreign = {**bad, "NetworkID": "a" * 64,
               "IPv4Data": [{"Pool": "172.18.0.0/16", "Gateway": "172.18.0.1/16"}]}
    err = (await h.call("NetworkDriver.CreateNetwork", foreign))["Err"]
    assert "172.18.0.0/16" in err and "--ipam-driver overnet" in err
    v6 = {**bad, "NetworkID": "a" * 64, "IPv6Data": [{"Pool": "fd00::/64"}]}
    assert "IPv4 only" in (await h.call("NetworkDriver.CreateNetwork", v6))["Err"]
    err = (await h.call("IpamDriver.RequestPool", {"Pool": "10.9.0.0/24", "Options": {}}))["Err"]
    assert "10.9.0.0/24" in err
    assert "V6" in (await h.call("IpamDriver.RequestPool", {"V6": True}))["Err"]
    assert "'10.1.0.0/24'" in (await h.call("IpamDriver.RequestPool",
                                            {"SubPool": "10.1.0.0/24"}))["Err"]
    err = (await h.call("IpamDriver.RequestPool", {"Options": {"overnet.network": "-x"}}))["Err"]
    assert "'-x'" in err
    err = (await h.call("IpamDriver.RequestPool", {"Options": {"overnet.network": "bridge"}}))
    assert "'bridge'" in err["Err"]
    err = (await h.call("IpamDriver.RequestAddress", {"PoolID": "zz", "Address": ""}))["Err"]
    assert "invalid PoolID 'zz'" in err
    assert not [n for n in h.agent.networks.all() if n.driver == "overlay"
                and n.name != h.agent.default_net[1]]


# --- endpoints -------------------------------------------------------------------------------

async def test_containers_on_two_hosts_get_distinct_addresses_and_see_each_other(cluster):
    h1, h2 = await hosts(cluster)
    d1, p1 = await h1.network_create("web", opts={"overnet.network": "web"})
    d2, p2 = await h2.network_create("web", opts={"overnet.network": "web"})
    e1, r1 = await h1.run(d1, p1["PoolID"])
    _, r2 = await h2.run(d2, p2["PoolID"])
    web = h1.agent.networks.find("web")
    assert r1["address"] != r2["address"]
    assert r1["address"].endswith(f"/{web.network.prefixlen}")
    ip1 = r1["address"].split("/")[0]
    mac1 = r1["created"]["Interface"]["MacAddress"]
    assert mac1 == "02:42:" + ":".join(f"{int(b):02x}" for b in ip1.split("."))
    joined = r1["joined"]
    assert joined["InterfaceName"] == {"SrcName": handover_name(e1), "DstPrefix": "eth"}
    assert joined["Gateway"] == web.gateway and joined["StaticRoutes"] == []
    # A macvlan of the network's vxlan0 was handed over with its MAC and the overlay MTU, and
    # is now the sandbox's eth0.
    ep = h1.agent.endpoints.find(e1)
    ns = h1.agent.networks.driver(web).namespace(web)
    eth0 = h1.agent.dp.link(r1["sandbox"], "eth0")
    assert eth0.mac == mac1 and eth0.mtu == ep.mtu == 1450
    assert eth0.kind == "macvlan" and eth0.lower == (ns, "vxlan0")
    # Every host sees the record (runtime docker, named after the endpoint) and programs it.
    await cluster.synced()
    recs = {r.ip: r for r in h2.agent.view.endpoints(web.id)}
    assert recs[ip1].runtime == "docker" and recs[ip1].name == e1[:12]
    await h2.agent.reconcile_network("net:" + web.id, False)
    ns2 = h2.agent.networks.driver(web).namespace(web)
    assert h2.agent.dp.link(ns2, "vxlan0").neigh[ip1] == mac1
    info = await h1.ok("NetworkDriver.EndpointOperInfo", {"NetworkID": d1, "EndpointID": e1})
    assert info["Value"]["ip"] == r1["address"] and info["Value"]["network"] == "web"
    # docker rm: nothing left on any host.
    await h1.rm(d1, p1["PoolID"], e1, r1["address"])
    await cluster.synced()
    assert h1.agent.endpoints.find(e1) is None
    assert ns not in h1.agent.dp.namespaces     # its last endpoint here: the namespace went
    assert "eth0" not in h1.agent.dp.namespaces[r1["sandbox"]].links
    assert handover_name(e1) not in h1.agent.dp.namespaces[None].links
    assert ip1 not in {r.ip for r in h2.agent.view.endpoints(web.id)}
    assert not h1.agent.endpoints.held
    await h1.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": d1, "EndpointID": e1})


async def test_a_held_address_is_nobody_elses_until_released(cluster):
    (h,) = await hosts(cluster, 1)
    _, p = await h.network_create("web", opts={"overnet.network": "web"})
    addr = (await h.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"]}))["Address"]
    ip = addr.split("/")[0]
    other = await h.agent.endpoints.attach(AttachRequest(
        network="web", container_id="c-other", netns=await netns(h.agent, "o"), runtime="cni"))
    assert other.ip != ip
    err = await h.call("IpamDriver.RequestAddress", {"PoolID": p["PoolID"], "Address": ip})
    assert ip in err["Err"]
    await h.ok("IpamDriver.ReleaseAddress", {"PoolID": p["PoolID"], "Address": ip})
    again = await h.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"], "Address": ip})
    assert again["Address"] == addr


async def test_an_endpoint_deleted_before_join_gives_its_address_back(cluster):
    (h,) = await hosts(cluster, 1)
    d, p = await h.network_create("web", opts={"overnet.network": "web"})
    addr = (await h.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"]}))["Address"]
    ep_id = "b" * 64
    await h.ok("NetworkDriver.CreateEndpoint", {
        "NetworkID": d, "EndpointID": ep_id, "Interface": {"Address": addr,
                                                           "MacAddress": "02:aa:00:00:00:01"}})
    assert h.agent.endpoints.held
    await h.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": d, "EndpointID": ep_id})
    assert not h.agent.endpoints.held


async def test_endpoint_errors_name_the_bad_value(cluster):
    (h,) = await hosts(cluster, 1)
    d, p = await h.network_create("web", opts={"overnet.network": "web"})
    ep = {"NetworkID": d, "EndpointID": "c" * 64}
    err = await h.call("NetworkDriver.CreateEndpoint", {**ep, "Interface": {
        "Address": "172.17.0.5/16"}})
    assert "172.17.0.5/16" in err["Err"] and "--ipam-driver overnet" in err["Err"]
    err = await h.call("NetworkDriver.CreateEndpoint", {**ep, "Interface": {}})
    assert "Interface.Address" in err["Err"]
    err = await h.call("NetworkDriver.Join", {**ep, "SandboxKey": "/run/x"})
    assert "unknown EndpointID cccccccccccc" in err["Err"]
    err = await h.call("NetworkDriver.Join", {**ep, "EndpointID": "xyz"})
    assert "invalid EndpointID 'xyz'" in err["Err"]
    addr = (await h.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"]}))["Address"]
    await h.ok("NetworkDriver.CreateEndpoint", {**ep, "Interface": {"Address": addr}})
    err = await h.call("NetworkDriver.Join", {**ep, "SandboxKey": "run/netns/x"})
    assert "invalid netns 'run/netns/x'" in err["Err"]
    assert h.agent.endpoints.find(ep["EndpointID"]) is None
    named = await h.ok("IpamDriver.RequestPool", {"Options": {"overnet.network": "web"}})
    err = await h.call("NetworkDriver.CreateNetwork", {
        "NetworkID": "d" * 64, "Options": {"com.docker.network.generic": {
            "overnet.network": "other"}}, "IPv4Data": [{"Pool": named["Pool"]}]})
    assert "overnet.network=other" in err["Err"]


async def test_a_docker_containers_interface_is_repaired_where_docker_put_it(cluster):
    """Docker moved and renamed the device it was handed: a drifted network's pass converges it
    in the sandbox under Docker's name, and replaces there a veth an overnet before macvlans
    made (same MAC, same name), rather than handing over a new device."""
    (h,) = await hosts(cluster, 1)
    d, p = await h.network_create("web", opts={"overnet.network": "web"})
    e, r = await h.run(d, p["PoolID"])
    web = h.agent.networks.find("web")
    path = h.agent.networks.driver(web).namespace(web)
    dp, sandbox = h.agent.dp, r["sandbox"]
    for ns, dev in ((path, "vxlan0"), (path, "gw0"), (sandbox, "eth0")):
        dp.link(ns, dev).mtu = 1400
    await h.agent.reconciler.run_now("net:" + web.id, verify=True)
    eth0 = dp.link(sandbox, "eth0")
    assert (eth0.kind, eth0.mtu) == ("macvlan", 1450)
    mac = eth0.mac
    dp.drop_link(sandbox, "eth0")                         # the earlier layout's veth
    dp.namespaces[sandbox].add("eth0", "veth", 1450, mac, up=True,
                               addresses=[r["address"]])
    dp.link(path, "vxlan0").mtu = 1400
    await h.agent.reconciler.run_now("net:" + web.id, verify=True)
    eth0 = dp.link(sandbox, "eth0")
    assert (eth0.kind, eth0.mac, eth0.addresses) == ("macvlan", mac, [r["address"]])
    assert handover_name(e) not in dp.namespaces[None].links
    await h.rm(d, p["PoolID"], e, r["address"])


async def test_an_agent_restart_keeps_docker_endpoints(cluster):
    (h,) = await hosts(cluster, 1)
    d, p = await h.network_create("web", opts={"overnet.network": "web"})
    e, r = await h.run(d, p["PoolID"])
    await cluster.crash("h1")
    old = h
    h = Host(await cluster.start("h1"), h.dockerd)   # a new agent and plugin, same kernel
    h.sandboxes = old.sandboxes                      # (and the same containers)
    ep = h.agent.endpoints.find(e)
    assert ep is not None and ep.ip == r["address"].split("/")[0]
    assert await h.agent.endpoints.check(e) == []
    again = await h.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"], "Address": ep.ip})
    assert again["Address"] == r["address"]       # dockerd asking again after its restart
    await h.rm(d, p["PoolID"], e, r["address"])
    assert h.agent.endpoints.find(e) is None
    await cluster.synced()
    assert not [k for k in h.agent.view.items if k.startswith(keys.endpoints(ep.network))]


# --- the socket ------------------------------------------------------------------------------

async def test_the_socket_speaks_docker_plugin_http(cluster, tmp_path):
    (h,) = await hosts(cluster, 1)
    path = str(tmp_path / "plugins" / "overnet.sock")
    await h.plugin.start(path)
    try:
        status, body = await unix_request(path, "POST", "/Plugin.Activate", b"")
        assert status == 200 and json.loads(body)["Implements"] == ["NetworkDriver",
                                                                    "IpamDriver"]
        status, body = await unix_request(path, "POST", "/IpamDriver.RequestPool", b"{bad")
        assert status == 200 and "not JSON" in json.loads(body)["Err"]
        status, body = await unix_request(path, "POST", "/NetworkDriver.Join", b"[1]")
        assert "expected a JSON object" in json.loads(body)["Err"]
        status, body = await unix_request(path, "POST", "/NetworkDriver.Leave",
                                          json.dumps({"NetworkID": "x"}).encode())
        assert "invalid NetworkID 'x'" in json.loads(body)["Err"]
    finally:
        await h.plugin.close()


async def test_a_started_container_is_renamed_to_its_docker_name(cluster):
    h1, h2 = await hosts(cluster)
    d, p = await h1.network_create("web", opts={"overnet.network": "web"})
    e, r = await h1.run(d, p["PoolID"], name="c1")
    ip = r["address"].split("/")[0]
    web = h1.agent.networks.find("web")
    await h2.agent.mirror.need(web.id)       # h2 has no container on it: read it anyway
    for _ in range(50):
        await cluster.synced()
        rec = {x.ip: x for x in h2.agent.view.endpoints(web.id)}[ip]
        if rec.name == "c1":
            break
        await asyncio.sleep(0.1)
    assert rec.name == "c1" and rec.aliases == [r["cid"][:12], "web-alias", e[:12]]
    assert await h1.agent.endpoints.check(e) == []
    await h1.rm(d, p["PoolID"], e, r["address"])    # the renamed record goes too
    await cluster.synced()
    assert not h2.agent.view.endpoints(web.id) or ip not in {
        x.ip for x in h2.agent.view.endpoints(web.id)}


async def test_a_driver_opt_names_the_endpoint(cluster):
    (h,) = await hosts(cluster, 1)
    d, p = await h.network_create("web", opts={"overnet.network": "web"})
    addr = (await h.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"]}))["Address"]
    ep = {"NetworkID": d, "EndpointID": "e" * 64}
    err = await h.call("NetworkDriver.CreateEndpoint", {
        **ep, "Interface": {"Address": addr}, "Options": {"overnet.name": "no.dots"}})
    assert "invalid overnet.name 'no.dots'" in err["Err"]
    await h.ok("NetworkDriver.CreateEndpoint", {
        **ep, "Interface": {"Address": addr}, "Options": {"overnet.name": "db"}})
    await h.ok("NetworkDriver.Join", {**ep, "SandboxKey": await netns(h.agent, "db")})
    assert h.agent.endpoints.find("e" * 64).name == "db"
    assert not h.plugin.driver._tasks      # a chosen name is not replaced by Docker's


async def test_the_ipam_driver_serves_overnet_networks_only(cluster):
    (h,) = await hosts(cluster, 1)
    _, p = await h.network_create("br", driver="bridge")   # dockerd's bridge, our IPAM
    err = await h.call("IpamDriver.RequestAddress", {"PoolID": p["PoolID"]})
    assert "'bridge'" in err["Err"] and "-d overnet" in err["Err"]


async def test_a_failed_join_leaves_nothing_half_made(cluster):
    (h,) = await hosts(cluster, 1)
    d, p = await h.network_create("web", opts={"overnet.network": "web"})
    addr = (await h.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"]}))["Address"]
    ep = {"NetworkID": d, "EndpointID": "f" * 64}
    await h.ok("NetworkDriver.CreateEndpoint", {**ep, "Interface": {"Address": addr}})
    h.agent.dp.fail_next("attach_handover")
    err = await h.call("NetworkDriver.Join", {**ep, "SandboxKey": "/run/docker/netns/x"})
    assert "injected failure" in err["Err"] and "ffffffffffff" in err["Err"]
    web = h.agent.networks.find("web")
    await cluster.synced()
    assert h.agent.endpoints.find("f" * 64) is None and not h.agent.view.endpoints(web.id)
    assert handover_name("f" * 64) not in h.agent.dp.namespaces[None].links
    await h.ok("NetworkDriver.DeleteEndpoint", ep)        # what Docker does next
    await h.ok("IpamDriver.ReleaseAddress", {"PoolID": p["PoolID"],
                                             "Address": addr.split("/")[0]})
    assert not h.agent.endpoints.held


# --- asking dockerd --------------------------------------------------------------------------

async def test_dockerapi_reads_chunked_json_404_and_errors(tmp_path):
    from overnet.docker.dockerapi import DockerApi, DockerApiError

    answers = {
        "/v1.41/networks/abc": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n"
                               b"9\r\n{\"Name\": \r\n7\r\n\"web\"}\n\r\n0\r\n\r\n",
        "/v1.41/networks/gone": b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        "/v1.41/networks": b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom",
    }

    async def serve(reader, writer):
        target = (await reader.readline()).split()[1].decode()
        while (await reader.readline()).strip():
            pass
        writer.write(answers[target])
        await writer.drain()
        writer.close()

    path = str(tmp_path / "docker.sock")
    server = await asyncio.start_unix_server(serve, path)
    try:
        api = DockerApi(path)
        assert await api.network("abc") == {"Name": "web"}
        assert await api.network("gone") is None
        with pytest.raises(DockerApiError, match="500 boom"):
            await api.networks()
        with pytest.raises(DockerApiError, match="cannot ask dockerd at /nonexistent"):
            await DockerApi("/nonexistent/docker.sock").network("abc")
    finally:
        server.close()
        await server.wait_closed()
