"""The agent's logic without root: several agents in one process over one MemoryStore, each
with its own FakeDataplane (its host's kernel)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os

import pytest

from overnet.agent.config import AgentConfig
from overnet.agent.daemon import Agent
from overnet.agent.endpoints import AttachRequest, attachment
from overnet.agent.state import ATTACHING, CONFLICT, LocalEndpoint
from overnet.dataplane.fake import FakeDataplane
from overnet.errors import Conflict, Invalid, NotFound
from overnet.ipam import pools
from overnet.store import keys
from overnet.store.base import Put
from overnet.store.memory import MemoryState, MemoryStore
from overnet.store.records import EndpointRecord, HostRecord, NetworkRecord


class Cluster:
    def __init__(self, tmp_path, **cfg) -> None:
        self.tmp = tmp_path
        self.state = MemoryState()
        self.cfg = cfg
        self.agents: dict[str, Agent] = {}
        self.kernels: dict[str, FakeDataplane] = {}

    def address(self, name: str) -> str:
        return f"192.168.9.{int(name[1:])}"

    async def start(self, name: str, **cfg) -> Agent:
        dp = self.kernels.get(name) or FakeDataplane(underlay=f"{self.address(name)}/24")
        self.kernels[name] = dp
        config = AgentConfig(store="memory://", name=name, advertise=self.address(name),
                             state_dir=str(self.tmp / name), resync_every=3600, dns=False,
                             **{**self.cfg, **cfg})
        agent = Agent(config, store=MemoryStore(self.state), dataplane=dp,
                      host_networks=lambda: [ipaddress.IPv4Network("192.168.9.0/24")])
        dp.closed = False
        await agent.start()
        self.agents[name] = agent
        return agent

    async def hosts(self, n: int, **cfg) -> list[Agent]:
        return [await self.start(f"h{i + 1}", **cfg) for i in range(n)]

    async def crash(self, name: str) -> None:
        """The agent dies: its loops stop, nothing is cleaned up, its lease lapses."""
        agent = self.agents.pop(name)
        await agent.supervisor.stop()
        await agent.mirror.stop()
        agent.keepalive._task.cancel()       # no revoke: the lease simply is not renewed
        await MemoryStore(self.state).revoke(agent.keepalive.lease)   # ... and lapses

    async def synced(self) -> None:
        """Every agent's copy holds what the store holds under each prefix in its scope."""
        store = MemoryStore(self.state)
        for a in self.agents.values():
            for m in a.mirror.mirrors():
                want = {kv.key: kv.value for kv in (await store.list(m.prefix))[0]}
                for _ in range(200):
                    if {k: i.value for k, i in m.items.items()} == want:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError(f"{a.name}'s mirror of {m.prefix} is behind")

    async def stop(self) -> None:
        for a in list(self.agents.values()):
            await a.stop()


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    await c.stop()


async def netns(agent: Agent, name: str) -> str:
    path = f"/run/test-containers/{agent.name}-{name}"
    await agent.dp.create_netns(path)
    return path


async def attach(agent: Agent, net: str, cid: str, **kw) -> LocalEndpoint:
    return await agent.endpoints.attach(AttachRequest(
        network=net, container_id=cid, netns=await netns(agent, cid), runtime="cni", **kw))


async def two_hosts(cluster: Cluster, **net: str) -> tuple[Agent, Agent]:
    """Two agents that both see the overlay network "web"."""
    h1, h2 = await cluster.hosts(2)
    await h1.networks.create("web", **net)
    await cluster.synced()
    return h1, h2


async def stored(store: MemoryStore, key: str, present: bool = True) -> bool:
    """Whether `key` is (or, with present=False, is no longer) in the store within ~2 s:
    for what an agent's background passes write or delete."""
    for _ in range(200):
        if (await store.get(key) is not None) == present:
            return True
        await asyncio.sleep(0.01)
    return False


async def one_host_on_web(cluster: Cluster, monkeypatch) -> tuple[Agent, NetworkRecord]:
    """h1 with container a on the overlay "web", adopting older agents' hosts at once."""
    from overnet.agent import membership
    monkeypatch.setattr(membership, "ADOPT_AFTER", 0.0)
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    await attach(h1, "web", "a")
    return h1, h1.networks.find("web")


def vxlan_peers(agent: Agent, net_name: str) -> dict[str, str]:
    net = agent.networks.find(net_name)
    path = agent.networks.driver(net).namespace(net)
    return dict(agent.dp.link(path, "vxlan0").neigh)


async def put_endpoint(cluster, net_id: str, host: str, host_address: str, ip: str,
                       name: str = "old") -> EndpointRecord:
    """An endpoint record written into the store behind the agents' backs (another agent's,
    a lost transaction's, a forged one)."""
    last = ip.rsplit(".", 1)[1]
    ep = EndpointRecord(id=last.rjust(64, "e"), network=net_id, container="c" * 64, name=name,
                        host=host, host_address=host_address, ip=ip,
                        mac=f"02:42:0a:80:00:{int(last) % 256:02x}")
    await MemoryStore(cluster.state).put(keys.endpoint(net_id, ip), ep.to_json())
    return ep


# --- networks ------------------------------------------------------------------------------

async def test_concurrent_network_create_one_wins(cluster):
    h1, h2 = await cluster.hosts(2)
    results = await asyncio.gather(h1.networks.create("web"), h2.networks.create("web"),
                                   return_exceptions=True)
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], Conflict) and "'web' already exists" in lost[0].message
    await cluster.synced()
    assert h1.networks.find("web").id == h2.networks.find("web").id == won[0].id


async def test_vnis_and_pools_are_unique_under_races(cluster):
    agents = await cluster.hosts(3)
    made = await asyncio.gather(*(a.networks.create(f"n{i}-{a.name}") for a in agents
                                  for i in range(5)))
    assert len({n.vni for n in made}) == 15
    subnets = [n.network for n in made]
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])


async def test_default_network_is_made_once(cluster):
    a, b = await asyncio.gather(cluster.start("h1", default_network="overlay:multihost"),
                                cluster.start("h2", default_network="overlay:multihost"))
    await cluster.synced()
    assert a.networks.find("multihost").id == b.networks.find("multihost").id


async def test_bad_subnets_are_refused(cluster):
    (h1,) = await cluster.hosts(1)
    for bad, needle in (("0.0.0.0/0", "0.0.0.0/0"), ("10.0.0.0/7", "10.0.0.0/7"),
                        ("192.168.9.0/25", "192.168.9.0/24")):
        with pytest.raises(Invalid, match=needle.replace(".", r"\.")):
            await h1.networks.create("bad", subnet=bad)
    assert not any(k.startswith(keys.NETWORKS) for k in h1.view.items)


# --- endpoints -----------------------------------------------------------------------------

async def test_block_claims_under_races_give_distinct_addresses(cluster):
    agents = await cluster.hosts(3)
    await agents[0].networks.create("web", subnet="10.44.0.0/22")
    await cluster.synced()
    eps = await asyncio.gather(*(attach(a, "web", f"c{a.name}x{i}") for a in agents
                                 for i in range(30)))
    ips = [ep.ip for ep in eps]
    assert len(set(ips)) == 90
    store = MemoryStore(cluster.state)
    net = agents[0].networks.find("web")
    blocks, _ = await store.list(keys.blocks(net.id))
    owner = {keys.parse_cidr_key(kv.key.rsplit("/", 1)[1]): json.loads(kv.value)["host"]
             for kv in blocks}
    for ep, agent in zip(eps, [a for a in agents for _ in range(30)]):
        block = pools.block_of(net.network, ipaddress.IPv4Address(ep.ip))
        assert owner[block] == agent.name


async def test_attach_programs_peers_both_ways_and_detach_withdraws(cluster):
    h1, h2 = await two_hosts(cluster)
    a = await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert vxlan_peers(h1, "web") == {b.ip: b.mac}
    assert vxlan_peers(h2, "web") == {a.ip: a.mac}
    info = await h1.dp.link_info(a.netns, "eth0")   # the container side
    assert f"{a.ip}/{a.prefixlen}" in info.addresses and info.mtu == 1450
    assert await h1.endpoints.check("a", "eth0") == []
    assert await h2.endpoints.detach("b", "eth0") is True
    assert await h2.endpoints.detach("b", "eth0") is False        # idempotent
    assert await h2.endpoints.detach("never", "eth0") is False
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert vxlan_peers(h1, "web") == {}


def tunnel_of(agent: Agent, net_name: str, mac: str) -> str | None:
    net = agent.networks.find(net_name)
    return agent.dp.link(agent.networks.driver(net).namespace(net), "vxlan0").fdb.get(mac)


async def test_a_membership_reconciles_only_its_network(cluster):
    h1, h2 = await two_hosts(cluster)
    await h1.networks.create("db")
    await attach(h1, "web", "a")
    await attach(h1, "db", "d")                    # h2 has nothing on db
    b = await attach(h2, "web", "b")
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert tunnel_of(h1, "web", b.mac) == cluster.address("h2")
    passes: list[str] = []
    run_now = h1.reconciler.run_now

    async def counted(target: str, verify: bool = False) -> None:
        passes.append(target)
        await run_now(target, verify)

    h1.reconciler.run_now = counted
    h3 = await cluster.start("h3")                 # joins: no endpoint anywhere
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert passes == []                            # (it used to reconcile web and db)
    assert not [k for k in h1.view.items if "h3" in k]    # and h1 holds nothing of h3
    assert not [k for k in h3.view.items if k.startswith((keys.MEMBERS, keys.PRESENT))]
    # h2's record on web moves to another address: b's record (tunnel at the old one) no
    # longer matches it, and web withdraws b at once; db is not touched
    web = h1.networks.find("web").id
    moved = HostRecord(name="h2", address="192.168.9.42")
    await MemoryStore(cluster.state).put(keys.member(web, "h2"), moved.to_json())
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert tunnel_of(h1, "web", b.mac) is None
    assert set(passes) == {"net:" + web}


async def test_a_network_record_wakes_only_the_hosts_on_the_network(cluster):
    # every host holds every network record: one a host has nothing on costs it no pass
    h1, h2 = await two_hosts(cluster)
    await attach(h1, "web", "a")
    await cluster.synced()
    await asyncio.sleep(0.05)
    passes: dict[str, list[str]] = {"h1": [], "h2": []}
    for name, h in (("h1", h1), ("h2", h2)):
        async def counted(target: str, verify: bool = False, run_now=h.reconciler.run_now,
                          seen=passes[name]) -> None:
            seen.append(target)
            await run_now(target, verify)
        h.reconciler.run_now = counted
    db = await h2.networks.create("db")           # nobody is on db
    web = h1.networks.find("web")
    await MemoryStore(cluster.state).put(keys.network(web.id), web.to_json())  # web changes
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert passes == {"h1": ["net:" + web.id], "h2": []}
    await attach(h2, "db", "d")                   # h2 now has db: its changes reach it
    passes["h2"].clear()
    await MemoryStore(cluster.state).put(keys.network(db.id), db.to_json())
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert passes["h2"] == ["net:" + db.id]


async def test_a_host_leaving_an_address_lets_the_host_it_shadowed_be_programmed(cluster):
    h1, h2 = await two_hosts(cluster)
    await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    store = MemoryStore(cluster.state)
    web = h1.networks.find("web").id
    h2_record = (await store.get(keys.member(web, "h2"))).value
    # h9 (no agent, no endpoint) claims h2's address on web; h2's record is written again:
    # h9's claim is now the older one, h2's is refused and b is not programmed anywhere
    h9 = HostRecord(name="h9", address=cluster.address("h2"))
    await store.put(keys.member(web, "h9"), h9.to_json())
    await store.put(keys.member(web, "h2"), h2_record)
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert tunnel_of(h1, "web", b.mac) is None
    # h9 goes: nothing of h2's changed, yet its record is admitted again and b comes back
    await store.delete(keys.member(web, "h9"))
    await cluster.synced()
    await asyncio.sleep(0.05)
    assert tunnel_of(h1, "web", b.mac) == cluster.address("h2")


async def test_a_host_is_on_a_network_while_it_has_endpoints_there(cluster):
    h1, h2 = await two_hosts(cluster)
    web = h1.networks.find("web").id
    mine = {keys.member(web, "h2"), keys.presence(web, "h2")}
    store = MemoryStore(cluster.state)
    b = await attach(h2, "web", "b")
    c = await attach(h2, "web", "c")
    kvs = {k: await store.get(k) for k in mine}
    assert all(kvs.values()) and kvs[keys.presence(web, "h2")].lease == h2.keepalive.lease.id
    assert json.loads(kvs[keys.member(web, "h2")].value)["address"] == cluster.address("h2")
    await h2.endpoints.detach("b")
    assert all([await store.get(k) for k in mine])       # c is still there
    await h2.endpoints.detach("c")
    assert not any([await store.get(k) for k in mine])   # the last one went: h2 left web
    assert b.ip and c.ip


async def test_a_lost_presence_is_put_back(cluster):
    h1, h2 = await two_hosts(cluster)
    await attach(h2, "web", "b")
    web = h1.networks.find("web").id
    store = MemoryStore(cluster.state)
    await store.delete(keys.presence(web, "h2"))      # e.g. its lease lapsed meanwhile
    assert await stored(store, keys.presence(web, "h2"))
    kv = await store.get(keys.presence(web, "h2"))
    assert kv.lease == h2.keepalive.lease.id


async def test_a_host_of_an_older_agent_is_adopted_onto_the_network(cluster, monkeypatch):
    h1, net = await one_host_on_web(cluster, monkeypatch)
    store = MemoryStore(cluster.state)
    # h7's agent predates members/: its host record, liveness and endpoint, nothing more
    rec = HostRecord(name="h7", address="192.168.9.77", started=5.0)
    await store.put(keys.host("h7"), rec.to_json())
    await store.put(keys.alive("h7"), rec.to_json())
    ep = await put_endpoint(cluster, net.id, "h7", rec.address, "10.128.0.200")
    await cluster.synced()
    await h1.reconcile_network("net:" + net.id, True)
    kv = await store.get(keys.member(net.id, "h7"))
    assert kv is not None and HostRecord.from_json(kv.value).address == rec.address
    await cluster.synced()
    await h1.reconcile_network("net:" + net.id, True)
    assert vxlan_peers(h1, "web") == {ep.ip: ep.mac}
    h1.gc.grace = 0
    assert await h1.gc.collect() == 0        # not present, but alive: nothing of it goes
    # once each time it goes missing: h7 left the network (or was collected, or rolled back
    # from a current agent) and its older agent put an endpoint there again
    await store.delete(keys.member(net.id, "h7"))
    # the pass the deletion wakes on h1 copies it again
    assert await stored(store, keys.member(net.id, "h7")), "h7 was not adopted again"
    await cluster.synced()
    await h1.reconcile_network("net:" + net.id, True)
    assert vxlan_peers(h1, "web") == {ep.ip: ep.mac}


async def test_what_a_host_knew_of_missing_hosts_goes_when_it_leaves(cluster, monkeypatch):
    # h7's endpoint is there before the cluster has any record of h7: h1 looks it up once
    # and says so. h1 then leaves the network, h7's record arrives, h1 comes back: h1 looks
    # again, and adopts h7.
    h1, net = await one_host_on_web(cluster, monkeypatch)
    store = MemoryStore(cluster.state)
    rec = HostRecord(name="h7", address="192.168.9.77", started=5.0)
    await put_endpoint(cluster, net.id, "h7", rec.address, "10.128.0.200")
    await cluster.synced()
    await h1.reconcile_network("net:" + net.id, True)
    assert await store.get(keys.member(net.id, "h7")) is None
    await h1.endpoints.detach("a")
    assert await stored(store, keys.member(net.id, "h1"), present=False)   # h1 left
    await store.put(keys.host("h7"), rec.to_json())
    await store.put(keys.alive("h7"), rec.to_json())
    await attach(h1, "web", "b")
    assert await stored(store, keys.member(net.id, "h7")), \
        "h7 was not adopted after h1 came back"


async def test_an_endpoint_before_its_hosts_membership_is_no_warning(cluster, monkeypatch,
                                                                      caplog):
    # a first endpoint and its host's membership come in one transaction but on two
    # watches: a copy may see the endpoint first. Only a host that stays missing is logged.
    from overnet.agent import membership
    monkeypatch.setattr(membership, "ADOPT_AFTER", 1.0)    # a slow machine does not get there first
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    await attach(h1, "web", "a")
    net = h1.networks.find("web")
    ep = await put_endpoint(cluster, net.id, "h9", "192.168.9.99", "10.128.0.201", "ghost")
    await cluster.synced()
    await h1.reconcile_network("net:" + net.id, True)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in said if "h9" in m]
    await asyncio.sleep(1.05)
    await h1.reconcile_network("net:" + net.id, True)
    await h1.reconcile_network("net:" + net.id, True)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in said if "'h9'" in m and "no record of it" in m]) == 1
    assert ep.ip not in vxlan_peers(h1, "web")


async def test_gc_keeps_the_records_of_a_host_that_is_alive_but_not_present(cluster):
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    await attach(h1, "web", "a")
    net = h1.networks.find("web")
    store = MemoryStore(cluster.state)
    rec = HostRecord(name="h7", address="192.168.9.77")   # an agent that writes no presence
    ip = "10.128.0.200"
    await store.put(keys.host("h7"), rec.to_json())
    await store.put(keys.alive("h7"), rec.to_json())
    await store.put(keys.member(net.id, "h7"), rec.to_json())
    await put_endpoint(cluster, net.id, "h7", rec.address, ip)
    await cluster.synced()
    h1.gc.grace = 0
    assert await h1.gc.collect() == 0                 # alive: nothing of it goes
    assert keys.endpoint(net.id, ip) in h1.view.items
    await store.delete(keys.alive("h7"))
    assert await h1.gc.collect() == 2                 # dead: its endpoint and membership
    assert await store.get(keys.member(net.id, "h7")) is None


async def test_a_new_lease_rewrites_only_the_liveness_record(cluster):
    (h1,) = await cluster.hosts(1)
    store = MemoryStore(cluster.state)
    host_before = await store.get(keys.host("h1"))
    lease = await store.grant(30)                  # as after the store was away too long
    await h1._register_host(lease)
    assert await store.get(keys.host("h1")) == host_before      # not written again
    alive = await store.get(keys.alive("h1"))
    assert alive.lease == lease.id and alive.value == host_before.value


async def test_attach_twice_is_a_conflict_not_a_second_address(cluster):
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    await attach(h1, "web", "a")
    with pytest.raises(Conflict, match="already has eth0 attached"):
        await h1.endpoints.attach(AttachRequest(network="web", container_id="a",
                                                netns="/run/test-containers/h1-a"))
    assert len(h1.endpoints.local) == 1


async def test_service_names_are_unique_per_network(cluster):
    h1, h2 = await two_hosts(cluster)
    results = await asyncio.gather(attach(h1, "web", "a", service="db"),
                                   attach(h2, "web", "b", service="db"),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and "service 'db' is already published" in errors[0].message
    loser = h1 if isinstance(results[0], Exception) else h2
    assert loser.endpoints.local == {}            # nothing half-made stays
    ns = [n for n in loser.dp.namespaces if n and n.startswith("/run/test-containers")]
    assert all("eth0" not in loser.dp.namespaces[n].links for n in ns)


async def test_a_failed_kernel_attach_leaves_nothing(cluster):
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    h1.dp.fail_next("attach_macvlan")
    with pytest.raises(Exception, match="injected failure"):
        await attach(h1, "web", "a")
    await cluster.synced()
    net = h1.networks.find("web")
    assert h1.endpoints.local == {} and h1.state.load_endpoints() == []
    assert not any(k.startswith(keys.endpoints(net.id)) for k in h1.view.items)
    assert h1.endpoints.used_ips(net.id) == set()     # the address was given back
    assert (await attach(h1, "web", "b")).ip


async def test_teardown_during_store_outage_is_finished_later(cluster):
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    ep = await attach(h1, "web", "a", service="a")
    net = h1.networks.find("web")
    h1.store.set_available(False)
    assert await h1.endpoints.detach("a", "eth0") is True
    assert await h1.dp.link_info(ep.netns, "eth0") is None        # the kernel: at once
    assert len(h1.state.owed_deletions()) == 2
    store = MemoryStore(cluster.state)
    assert await store.get(keys.endpoint(net.id, ep.ip)) is not None
    h1.store.set_available(True)
    await h1.endpoints.settle_owed()
    assert await store.get(keys.endpoint(net.id, ep.ip)) is None
    assert await store.get(keys.service(net.id, "a")) is None
    assert h1.state.owed_deletions() == []
    # the host's records on web outlived the outage; the sweep takes them: h1 left web
    assert await store.get(keys.member(net.id, "h1")) is not None
    await cluster.synced()
    assert await h1.endpoints.sweep() == 1
    assert await store.get(keys.member(net.id, "h1")) is None
    assert await store.get(keys.presence(net.id, "h1")) is None


# --- restarts, crashes and garbage ----------------------------------------------------------

async def test_restart_adopts_without_touching_the_kernel(cluster):
    h1, h2 = await two_hosts(cluster)
    await attach(h1, "web", "a")
    await attach(h2, "web", "b")
    await cluster.synced()
    await asyncio.sleep(0.05)
    before = repr(sorted((str(k), repr(v)) for k, v in h1.dp.namespaces.items()))
    calls = len(h1.dp.calls)
    await h1.stop()
    cluster.agents.pop("h1")
    h1 = await cluster.start("h1")
    assert repr(sorted((str(k), repr(v)) for k, v in h1.dp.namespaces.items())) == before
    changing = [c.method for c in h1.dp.calls[calls:] if c.method in
                ("attach", "detach", "add_peer", "remove_peer", "remove_overlay",
                 "delete_netns")]
    assert changing == []
    assert set(h1.endpoints.local) == {("a", "eth0")}


async def test_half_made_attach_is_rolled_back_at_start(cluster):
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    ok = await attach(h1, "web", "ok")
    # a crash between the journal, the store write and the kernel: simulate by journalling
    # an endpoint and writing its records, then dying before it is marked attached
    net = h1.networks.find("web")
    path = await netns(h1, "half")
    req = AttachRequest(network="web", container_id="half", netns=path, runtime="cni")
    ep = await h1.endpoints._reserve(net, h1.networks.driver(net), req)
    await h1.endpoints._publish(net, ep)
    await h1.networks.driver(net).attach(net, attachment(ep))
    assert ep.phase == ATTACHING
    await cluster.crash("h1")
    h1 = await cluster.start("h1")
    await cluster.synced()
    assert set(h1.endpoints.local) == {("ok", "eth0")}
    assert await h1.dp.link_info(path, "eth0") is None
    assert keys.endpoint(net.id, ep.ip) not in h1.view.items
    assert keys.endpoint(net.id, ok.ip) in h1.view.items
    assert await h1.dp.link_info(ok.netns, "eth0") is not None   # the other is untouched


async def test_endpoint_of_a_gone_netns_is_removed_at_start(cluster):
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    a = await attach(h1, "web", "a")
    await attach(h1, "web", "b")
    await cluster.crash("h1")
    cluster.kernels["h1"].drop_netns(a.netns)
    h1 = await cluster.start("h1")
    assert set(h1.endpoints.local) == {("b", "eth0")}
    net = h1.networks.find("web")
    assert await h1.dp.is_netns(h1.networks.driver(net).namespace(net))   # b keeps it


async def test_a_host_holds_only_the_networks_it_has_containers_on(cluster):
    h1, h2, h3 = await cluster.hosts(3)
    await h1.networks.create("web")
    await cluster.synced()
    net = h1.networks.find("web")
    events = {a.name: a.mirror.subscribe() for a in (h2, h3)}
    a = await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    await cluster.synced()

    def held(agent: Agent) -> set[str]:
        return {k for k in agent.view.items if k.startswith(keys.endpoints(net.id))}
    assert held(h2) == {keys.endpoint(net.id, a.ip), keys.endpoint(net.id, b.ip)}
    assert vxlan_peers(h2, "web") == {a.ip: a.mac}
    assert held(h3) == set() and h3.mirror.networks() == set()
    assert events["h3"].empty()                   # not one event of the starts reached h3
    assert not events["h2"].empty()
    # the last container leaves: its peers go at once, the network's records after a linger
    assert await h2.endpoints.detach("b", "eth0") is True
    assert not await h2.dp.is_netns(h2.networks.driver(net).namespace(net))
    assert await h2.mirror.prune() == []          # used a moment ago
    h2.mirror.linger = 0
    assert await h2.mirror.prune() == [net.id]
    assert held(h2) == set()
    # a read of the network brings it back for a while (network inspect)
    await h3.in_scope(net)
    assert held(h3) == {keys.endpoint(net.id, a.ip)}


async def in_scope(agent: Agent, network: str) -> None:
    """A host collects the dead hosts' records of the networks in its mirror's scope: those
    it has containers on, or (as here) reads (`network inspect`)."""
    await agent.mirror.need(agent.networks.find(network).id)


async def test_gc_after_grace_and_not_before(cluster):
    h1, h2 = await two_hosts(cluster)
    b = await attach(h2, "web", "b")
    await in_scope(h1, "web")
    await cluster.crash("h2")
    await cluster.synced()
    now = [100.0]
    h1.gc.clock = lambda: now[0]
    h1.gc.grace, h1.gc.block_grace = 60, 600
    assert await h1.gc.collect() == 0
    now[0] += 59
    assert await h1.gc.collect() == 0
    net = h1.networks.find("web")
    assert keys.endpoint(net.id, b.ip) in h1.view.items
    now[0] += 1
    assert await h1.gc.collect() == 2            # the endpoint, h2 on web; its block stays
    await cluster.synced()
    assert keys.endpoint(net.id, b.ip) not in h1.view.items
    assert keys.member(net.id, "h2") not in h1.view.items
    assert any(k.startswith(keys.blocks(net.id)) for k in h1.view.items)
    now[0] += 540
    assert await h1.gc.collect() == 1            # now the block
    await cluster.synced()
    assert not any(k.startswith(keys.blocks(net.id)) for k in h1.view.items)


async def test_an_agent_that_is_down_keeps_its_peers_programmed(cluster):
    h1, h2 = await two_hosts(cluster)
    await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    await cluster.crash("h2")
    await cluster.synced()
    await h1.reconcile_network("net:" + h1.networks.find("web").id, True)
    assert vxlan_peers(h1, "web") == {b.ip: b.mac}


async def test_a_restarted_agent_republishes_and_loses_a_taken_address(cluster):
    h1, h2 = await two_hosts(cluster, subnet="10.50.0.0/29")   # one block: one owner
    b = await attach(h2, "web", "b")
    c = await attach(h2, "web", "c")
    await in_scope(h1, "web")
    await cluster.crash("h2")
    await cluster.synced()
    h1.gc.grace = h1.gc.block_grace = 0
    assert await h1.gc.collect() == 4             # h2's two endpoints, block, membership
    await cluster.synced()
    taken = await attach(h1, "web", "a")         # h1 takes the block and b's address
    assert taken.ip == b.ip
    h2 = await cluster.start("h2")
    await cluster.synced()
    assert h2.endpoints.find("b").phase == CONFLICT
    assert await h2.dp.link_info(b.netns, "eth0") is None      # never two live holders
    assert h2.endpoints.find("c").phase != CONFLICT                 # c's address was free
    net = h1.networks.find("web")
    assert json.loads(h1.view.items[keys.endpoint(net.id, c.ip)].value)["host"] == "h2"
    assert json.loads(h1.view.items[keys.endpoint(net.id, b.ip)].value)["host"] == "h1"


async def test_collected_endpoints_come_back_and_their_addresses_stay_unused(cluster):
    h1, h2 = await two_hosts(cluster, subnet="10.50.0.0/29")   # one block: one owner
    b = await attach(h2, "web", "b")
    await in_scope(h1, "web")
    await cluster.crash("h2")
    await cluster.synced()
    h1.gc.grace = 0
    assert await h1.gc.collect() == 2             # the endpoint, h2 on web; not the block
    await cluster.synced()
    with pytest.raises(Conflict, match="full"):   # b still holds its address: not given out
        await attach(h1, "web", "a")
    h2 = await cluster.start("h2")
    await cluster.synced()
    net = h1.networks.find("web")
    assert h2.endpoints.find("b").phase == "attached"
    assert json.loads(h1.view.items[keys.endpoint(net.id, b.ip)].value)["host"] == "h2"


async def test_store_garbage_never_reaches_the_kernel(cluster):
    h1, h2 = await two_hosts(cluster)
    a = await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    net = h1.networks.find("web")
    store = MemoryStore(cluster.state)

    def rec(ip: str, **kw) -> bytes:
        base = dict(id="e" * 64, network=net.id, container="f" * 64, name="x", host="h2",
                    host_address="192.168.9.2", ip=ip, mac="02:42:0a:80:00:63")
        return EndpointRecord(**{**base, **kw}).to_json()

    bad = {
        "10.128.0.50": rec("10.128.0.50", host_address="0.0.0.0"),
        "10.128.0.51": rec("10.128.0.51", host_address="192.168.9.1", mac="02:42:0a:80:00:64"),
        "10.99.0.1": rec("10.99.0.1", mac="02:42:0a:80:00:65"),
        "10.128.0.52": rec("10.128.0.53", mac="02:42:0a:80:00:66"),      # key != address
        "10.128.0.54": rec("10.128.0.54", mac=b.mac),                     # b's MAC
        "10.128.0.55": b'{"id": 1}',
        "10.128.0.56": rec("10.128.0.56", name="x" * 1000, mac="02:42:0a:80:00:67"),
    }
    await store.txn([], [Put(keys.endpoint(net.id, k), v) for k, v in bad.items()])
    await store.put(keys.VNIS + "not-a-number", b"{}")
    # host records on web that must not change who h2 is: one under another host's name,
    # one that is not a host record, one for a host no endpoint names
    await store.put(keys.member(net.id, "h3"), HostRecord(name="h2", address="192.168.9.66")
                    .to_json())
    await store.put(keys.member(net.id, "h4"), b'{"name": "h4", "address": "0.0.0.0"}')
    await store.put(keys.presence(net.id, "h5"), b"not json")
    await cluster.synced()
    await h1.reconcile_network("net:" + net.id, True)
    assert vxlan_peers(h1, "web") == {b.ip: b.mac}
    other = await h1.networks.create("other")                 # still works
    assert other.vni != net.vni
    assert a.ip not in vxlan_peers(h1, "web")


async def test_resync_restores_what_the_kernel_lost(cluster):
    h1, h2 = await two_hosts(cluster)
    await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    await cluster.synced()
    net = h1.networks.find("web")
    path = h1.networks.driver(net).namespace(net)
    await h1.reconcile_network("net:" + net.id, False)
    h1.dp.remove_neigh(path, b.ip)
    h1.dp.remove_fdb(path, b.mac)
    assert vxlan_peers(h1, "web") == {}
    await h1.reconciler.run_now("net:" + net.id, verify=True)
    assert vxlan_peers(h1, "web") == {b.ip: b.mac}
    assert await h1.endpoints.check("a", "eth0") == []


async def mtu_lowered_under_a_container(cluster):
    """One host, container a on network web, and vxlan0's MTU lowered under it as the kernel
    does it: its macvlans (gw0, a's eth0) go down with it."""
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    a = await attach(h1, "web", "a")
    net = h1.networks.find("web")
    path = h1.networks.driver(net).namespace(net)
    for ns, dev in ((path, "vxlan0"), (path, "gw0"), (a.netns, "eth0")):
        h1.dp.link(ns, dev).mtu = 1400
    return h1, a, net, path


async def test_resync_puts_right_the_devices_that_drifted(cluster):
    """vxlan0's MTU lowered (the kernel lowers its macvlans with it: gw0, the containers'),
    a container's interface downed: the next verifying pass restores all of it, and one
    with nothing drifted re-attaches nothing."""
    h1, a, net, path = await mtu_lowered_under_a_container(cluster)
    h1.dp.link(a.netns, "eth0").up = False
    assert await h1.endpoints.check("a", "eth0") != []
    await h1.reconcile_network("net:" + net.id, False)       # an event's pass trusts its cache
    assert h1.dp.link(a.netns, "eth0").mtu == 1400
    await h1.reconciler.run_now("net:" + net.id, verify=True)
    assert [h1.dp.link(ns, dev).mtu for ns, dev in
            ((path, "vxlan0"), (path, "gw0"), (a.netns, "eth0"))] == [1450] * 3
    assert h1.dp.link(a.netns, "eth0").up
    assert await h1.endpoints.check("a", "eth0") == []
    before = h1.dp.count("attach_macvlan")
    await h1.reconciler.run_now("net:" + net.id, verify=True)
    assert h1.dp.count("attach_macvlan") == before


async def test_an_upgrade_moves_containers_from_veth_pairs_to_macvlans(cluster):
    """A network namespace as an overnet before macvlans left it (vxlan0 a port of br0, a veth
    pair per container, the MAC on the container's end): the upgraded agent takes the bridge
    away, puts the gateway on gw0 and gives each container a macvlan with its MAC and
    address, with nothing left of the pairs."""
    (h1,) = await cluster.hosts(1)
    await h1.networks.create("web")
    a = await attach(h1, "web", "a")
    net = h1.networks.find("web")
    path = h1.networks.driver(net).namespace(net)
    await cluster.crash("h1")
    dp = cluster.kernels["h1"]
    dp.drop_link(path, "gw0")
    dp.add_device(path, "br0", kind="bridge", mtu=1450,
                  addresses=[f"{net.gateway}/{net.network.prefixlen}"])
    dp.link(path, "vxlan0").master = "br0"
    dp.drop_link(a.netns, "eth0")
    dp.namespaces[path].add("veth0000001", "veth", 1450, up=True, master="br0",
                            peer=(a.netns, "eth0"))
    dp.namespaces[a.netns].add("eth0", "veth", 1450, a.mac, up=True,
                               addresses=[f"{a.ip}/{a.prefixlen}"], peer=(path, "veth0000001"))
    h1 = await cluster.start("h1")
    await h1.reconcile_network("net:" + net.id, False)
    eth0 = dp.link(a.netns, "eth0")
    assert (eth0.kind, eth0.mac, eth0.addresses) == ("macvlan", a.mac, [f"{a.ip}/{a.prefixlen}"])
    assert set(dp.namespaces[path].links) == {"lo", "vxlan0", "gw0"}
    assert dp.link(path, "vxlan0").master is None
    assert await h1.endpoints.check("a", "eth0") == []


async def test_the_repairing_pass_does_not_wait_for_a_busy_endpoint(cluster):
    """An attach or a detach holds its endpoint's lock while it waits for the network's pass;
    a verifying pass that waited for that lock would never end (seen with the store paused:
    a start hung, not failed)."""
    h1, a, net, path = await mtu_lowered_under_a_container(cluster)
    async with h1.endpoints._lock(("a", "eth0")):      # an attach or detach at work
        await asyncio.wait_for(h1.reconciler.run_now("net:" + net.id, verify=True), 5)
        assert h1.dp.link(path, "vxlan0").mtu == 1450
        assert h1.dp.link(a.netns, "eth0").mtu == 1400  # left for a later pass
    await h1.reconciler.run_now("net:" + net.id, verify=True)
    assert h1.dp.link(a.netns, "eth0").mtu == 1450      # vxlan0 was fine by then: still seen to


async def test_check_names_what_differs(cluster):
    h1, h2 = await two_hosts(cluster)
    a = await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    await cluster.synced()
    await h1.reconcile_network("net:" + h1.networks.find("web").id, False)
    h1.dp.link(a.netns, "eth0").mtu = 1400
    net = h1.networks.find("web")
    h1.dp.remove_fdb(h1.networks.driver(net).namespace(net), b.mac)
    h1.dp.remove_neigh(h1.networks.driver(net).namespace(net), b.ip)
    problems = await h1.endpoints.check("a", "eth0")
    assert any("MTU 1400, not 1450" in p for p in problems)
    assert any(f"peer {b.ip}" in p and "not programmed" in p for p in problems)
    with pytest.raises(NotFound):
        await h1.endpoints.check("zzz", "eth0")


# --- the built-in runner --------------------------------------------------------------------

async def test_links_resolve_across_hosts(cluster):
    h1, h2 = await cluster.hosts(2, default_network="overlay:multihost")
    await cluster.synced()
    web = await h1.containers.create({"name": "web", "cmd": ["true"]})
    await cluster.synced()
    app = await h2.containers.create({"name": "app", "cmd": ["true"], "links": ["web:db"]})
    ip = h1.containers.endpoint(web).ip
    with open(app.hosts_file) as f:
        hosts = f.read()
    assert f"{ip}\tdb web\n" in hosts and f"{ip}\tweb.multihost\n" in hosts
    assert h2.containers.spec(app).env["DB_IP"] == ip
    with pytest.raises(NotFound, match="--link nope"):
        await h2.containers.create({"name": "bad", "cmd": ["true"], "links": ["nope"]})
    assert [c.name for c in h2.containers.containers.values()] == ["app"]


async def test_a_created_container_that_never_starts_expires(cluster):
    (h1,) = await cluster.hosts(1, default_network="overlay:multihost", start_expiry=0.2)
    c = await h1.containers.create({"name": "fg", "cmd": ["true"]})
    assert h1.containers.endpoint(c) is not None
    await asyncio.sleep(1.5)
    assert h1.containers.containers == {} and h1.endpoints.local == {}
    assert not os.path.exists(h1.state.container_dir(c.id))


async def test_sweep_removes_records_of_ours_that_nothing_backs(cluster):
    h1, h2 = await two_hosts(cluster)
    a = await attach(h1, "web", "a")
    b = await attach(h2, "web", "b")
    net = h1.networks.find("web")
    # a transaction whose answer was lost: the record of an endpoint h1 rolled back
    lost = await put_endpoint(cluster, net.id, "h1", "192.168.9.1", "10.128.0.99", "ghost")
    await cluster.synced()
    assert await h1.endpoints.sweep() == 1
    await cluster.synced()
    assert keys.endpoint(net.id, lost.ip) not in h1.view.items
    assert keys.endpoint(net.id, a.ip) in h1.view.items
    assert keys.endpoint(net.id, b.ip) in h1.view.items      # h2's: not h1's business
