"""The agent's scoped copy of the store (store/scoped.py), on MemoryStore: the cluster-wide
kinds whole, the per-network kinds only for the networks in scope."""

from __future__ import annotations

import asyncio

import pytest

from overnet.store import MemoryState, MemoryStore, StoreUnavailable, keys
from overnet.store.scoped import OUT_OF_SCOPE, ScopedMirror

NET_A, NET_B = "a" * 64, "b" * 64


class Listing(MemoryStore):
    """Counts the lists it answers, by prefix."""

    def __init__(self, state: MemoryState) -> None:
        super().__init__(state)
        self.lists: dict[str, int] = {}

    async def list(self, prefix: str):
        self.lists[prefix] = self.lists.get(prefix, 0) + 1
        return await super().list(prefix)


@pytest.fixture
async def world():
    state = MemoryState("scoped")
    writer, reader = MemoryStore(state), Listing(state)
    await writer.put(keys.host("h1"), b"{}")
    await writer.put(keys.network(NET_A), b"{}")
    for net in (NET_A, NET_B):
        await writer.put(keys.endpoint(net, "10.0.0.2"), b'{"host": "h2"}')
        await writer.put(keys.service(net, "web"), b"{}")
    mirror = ScopedMirror(reader, linger=0)
    await mirror.start()
    yield writer, reader, mirror
    await mirror.stop()


async def settle(mirror: ScopedMirror, key: str, rev: int) -> None:
    await mirror.wait_for(key, rev, timeout=5)


async def test_only_the_cluster_wide_kinds_until_a_network_is_needed(world):
    writer, reader, mirror = world
    assert keys.network(NET_A) in mirror.items
    assert keys.host("h1") not in mirror.items          # no agent mirrors every host
    assert not [k for k in mirror.items if k.startswith(tuple(keys.PER_NETWORK))]
    assert keys.ENDPOINTS not in reader.lists and mirror.networks() == set()
    assert mirror.keys_in(keys.endpoints(NET_A)) == []
    assert mirror.generation(keys.endpoints(NET_A)) == OUT_OF_SCOPE
    # a write to a network out of scope reaches no mirror, and waiting for it returns at once
    rev = await writer.put(keys.endpoint(NET_A, "10.0.0.3"), b"{}")
    await asyncio.wait_for(mirror.wait_for(keys.endpoint(NET_A, "10.0.0.3"), rev), 0.1)
    assert keys.endpoint(NET_A, "10.0.0.3") not in mirror.items


async def test_a_needed_network_comes_whole_then_follows(world):
    writer, reader, mirror = world
    queue = mirror.subscribe()
    before = mirror.generation(keys.endpoints(NET_A))
    await asyncio.gather(mirror.need(NET_A), mirror.need(NET_A))    # one list, not two
    assert reader.lists[keys.endpoints(NET_A)] == 1
    assert mirror.networks() == {NET_A}
    assert sorted(mirror.keys_in(keys.endpoints(NET_A))) == [keys.endpoint(NET_A, "10.0.0.2")]
    assert mirror.keys_in(keys.SERVICES) == [keys.service(NET_A, "web")]
    assert mirror.generation(keys.endpoints(NET_A)) != before
    seen = set()
    while not queue.empty():
        seen |= {e.key for e in queue.get_nowait()}
    assert seen == {keys.endpoint(NET_A, "10.0.0.2"), keys.service(NET_A, "web")}
    # later changes follow; the other network's stay out
    rev = await writer.put(keys.endpoint(NET_A, "10.0.0.4"), b"{}")
    await writer.put(keys.endpoint(NET_B, "10.0.0.4"), b"{}")
    await settle(mirror, keys.endpoint(NET_A, "10.0.0.4"), rev)
    assert keys.endpoint(NET_A, "10.0.0.4") in mirror.items
    assert keys.endpoint(NET_B, "10.0.0.4") not in mirror.items
    assert len(mirror.items) == len(list(mirror.items)) == 4   # network, 2 + 1 of NET_A


async def test_a_network_leaves_scope_only_when_nothing_keeps_it(world):
    writer, _, mirror = world
    kept = {NET_B}
    mine: set[str] = set()
    mirror.keep = lambda net: net in kept
    mirror.mine = lambda key: key in mine
    await mirror.need(NET_A, NET_B)
    async with mirror.hold(NET_A):
        assert await mirror.prune() == []                 # held
    mirror.linger = 60
    assert await mirror.prune() == []                     # used within the last minute
    mirror.linger = 0
    mine.add(keys.endpoint(NET_A, "10.0.0.2"))
    assert await mirror.prune() == []                     # a record of ours is in it
    mine.clear()
    gen = mirror.generation(keys.ENDPOINTS)
    assert await mirror.prune() == [NET_A]                # NET_B: an endpoint of ours
    assert mirror.networks() == {NET_B}
    assert keys.endpoint(NET_A, "10.0.0.2") not in mirror.items
    assert mirror.generation(keys.ENDPOINTS) != gen
    assert mirror.generation(keys.endpoints(NET_A)) == OUT_OF_SCOPE
    # back in scope: a fresh list, and a generation no earlier reader has cached
    await writer.put(keys.endpoint(NET_A, "10.0.0.9"), b"{}")
    await mirror.need(NET_A)
    assert keys.endpoint(NET_A, "10.0.0.9") in mirror.items
    assert mirror.generation(keys.endpoints(NET_A)) not in (OUT_OF_SCOPE, gen)


async def test_a_network_that_cannot_be_listed_stays_out(world):
    _, reader, mirror = world

    async def down(prefix: str):
        raise StoreUnavailable("down")
    reader.list = down
    with pytest.raises(StoreUnavailable, match="down"):
        await mirror.need(NET_A)
    assert mirror.networks() == set() and mirror.state == "in-sync"
