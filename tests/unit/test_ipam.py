"""Address arithmetic and the block allocator over the in-memory store."""

import asyncio
import ipaddress

import pytest

from overnet.ipam import pools
from overnet.ipam.allocator import HostAllocator
from overnet.store import keys
from overnet.store.memory import MemoryStore
from overnet.store.records import NetworkRecord

A = ipaddress.IPv4Address
N = ipaddress.IPv4Network


def test_parse_subnet_errors():
    assert pools.parse_subnet("10.1.0.0/16") == N("10.1.0.0/16")
    for bad, msg in [("10.1.0.0", "prefix length"), ("banana", "IPv4 CIDR"),
                     ("10.1.0.1/16", "host bits"), ("10.1.0.0/30", "too small")]:
        with pytest.raises(pools.IpamError, match=msg) as e:
            pools.parse_subnet(bad)
        assert bad in str(e.value)


def test_gateway_rules():
    net = N("10.1.0.0/24")
    assert pools.parse_gateway("10.1.0.254", net) == A("10.1.0.254")
    for bad in ("10.1.0.0", "10.1.0.255", "10.2.0.1", "x"):
        with pytest.raises(pools.IpamError):
            pools.parse_gateway(bad, net)


def test_next_free_pool_skips_taken_and_overlapping():
    taken = [N("10.128.0.0/16"), N("10.129.5.0/24")]
    assert pools.next_free_pool(taken) == N("10.130.0.0/16")
    with pytest.raises(pools.PoolExhausted):
        pools.next_free_pool([N("10.0.0.0/8")], "10.0.0.0/15", 16)


def test_block_sizes():
    assert pools.block_prefix(N("10.0.0.0/16")) == 26
    assert pools.block_prefix(N("10.0.0.0/24")) == 28
    assert pools.block_prefix(N("10.0.0.0/29")) == 29


def test_pick_address_never_gives_reserved():
    net = N("10.0.0.0/28")
    gw = A("10.0.0.1")
    got = []
    used: set = set()
    while (a := pools.pick_address(net, gw, [net], used)) is not None:
        got.append(a)
        used.add(a)
    assert A("10.0.0.0") not in got and A("10.0.0.15") not in got and gw not in got
    assert len(got) == 13


def test_mac_for():
    assert pools.mac_for(A("172.21.0.3")) == "02:42:ac:15:00:03"


def _net(subnet="10.5.0.0/24"):
    return NetworkRecord(id="ab" * 32, name="n", driver="overlay", subnet=subnet,
                         gateway=str(N(subnet).network_address + 1), vni=256)


async def test_two_hosts_never_share_an_address():
    store = MemoryStore()
    net = _net()
    hosts = [HostAllocator(store, "h1"), HostAllocator(store, "h2")]
    used = {"h1": set(), "h2": set()}

    async def take(i):
        alloc = hosts[i % 2]
        async with alloc.lock(net.id):
            a = await alloc.allocate(net, used[alloc.host])
            used[alloc.host].add(a)
            return a

    got = await asyncio.gather(*(take(i) for i in range(100)))
    assert len(set(got)) == 100
    kvs, _ = await store.list(keys.blocks(net.id))
    owners = {kv.key: kv.value for kv in kvs}
    assert len(owners) >= 2


async def test_full_pool_is_a_clear_error():
    store = MemoryStore()
    net = _net("10.6.0.0/29")
    alloc = HostAllocator(store, "h1")
    used: set = set()
    for _ in range(5):
        used.add(await alloc.allocate(net, used))
    with pytest.raises(pools.PoolExhausted, match="10.6.0.0/29 is full"):
        await alloc.allocate(net, used)
    other = HostAllocator(store, "h2")
    with pytest.raises(pools.PoolExhausted):
        await other.allocate(net, set())


async def test_release_gives_back_empty_blocks():
    store = MemoryStore()
    net = _net("10.7.0.0/16")
    alloc = HostAllocator(store, "h1")
    a = await alloc.allocate(net, set())
    assert len((await store.list(keys.blocks(net.id)))[0]) == 1
    await alloc.release(net, {a})
    assert len((await store.list(keys.blocks(net.id)))[0]) == 1
    await alloc.release(net, set())
    assert (await store.list(keys.blocks(net.id)))[0] == []


@pytest.mark.parametrize("bad, message", [
    ("0.0.0.0/0", "/0 is too large"), ("10.0.0.0/7", "/7 is too large"),
    ("127.0.0.0/16", "loopback"), ("224.0.0.0/8", "multicast"), ("169.254.0.0/16", "link-local"),
    ("240.0.0.0/8", "reserved"), ("0.0.0.0/8", "this network")])
def test_parse_subnet_refuses_huge_and_special_pools(bad, message):
    with pytest.raises(pools.IpamError, match=message) as e:
        pools.parse_subnet(bad)
    assert repr(bad) in str(e.value)
    assert pools.parse_subnet("10.0.0.0/8") == N("10.0.0.0/8")


def test_check_no_overlap_names_the_route():
    routes = [N("0.0.0.0/0"), N("192.168.33.0/24"), N("172.17.0.0/16")]
    pools.check_no_overlap(N("10.0.0.0/8"), routes)        # the default route is no conflict
    with pytest.raises(pools.IpamError, match="overlaps 172.17.0.0/16"):
        pools.check_no_overlap(N("172.16.0.0/12"), routes)
    with pytest.raises(pools.IpamError, match="overlaps 192.168.33.0/24"):
        pools.check_no_overlap(N("192.168.33.128/25"), routes)


def test_next_free_pool_matches_a_plain_search():
    import random
    rng = random.Random(3)
    whole = N("10.128.0.0/9")
    for _ in range(200):
        taken = [N((rng.randrange(1 << 32) & ~((1 << (32 - p)) - 1), p))
                 for p in (rng.randrange(8, 25) for _ in range(rng.randrange(6)))]
        taken += [N((int(whole.network_address) + rng.randrange(128) * 65536, 16))
                  for _ in range(rng.randrange(100))]
        plain = next((c for c in whole.subnets(new_prefix=16)
                      if not any(c.overlaps(t) for t in taken)), None)
        if plain is None:
            with pytest.raises(pools.PoolExhausted):
                pools.next_free_pool(taken)
        else:
            assert pools.next_free_pool(taken) == plain


def test_block_arithmetic():
    net = N("10.0.0.0/8")
    assert pools.block_count(net) == 1 << 18
    assert pools.block_at(net, 5) == N("10.0.1.64/26")
    assert pools.block_of(net, A("10.0.1.100")) == N("10.0.1.64/26")
    assert pools.is_block(net, N("10.0.1.64/26")) and not pools.is_block(net, N("10.0.0.0/8"))
    assert not pools.is_block(net, N("11.0.0.0/26"))


async def test_a_slash_8_pool_is_never_listed(monkeypatch):
    """Allocation on the biggest pool allowed: no path may list the pool's blocks."""
    def forbidden(*args, **kwargs):
        raise AssertionError("listed every block of the pool")
    monkeypatch.setattr(pools, "blocks_of", forbidden)
    monkeypatch.setattr(N, "subnets", forbidden)
    store = MemoryStore()
    net = _net("10.0.0.0/8")
    alloc = HostAllocator(store, "h1")
    used: set = set()
    for _ in range(200):
        used.add(await alloc.allocate(net, used))
    blocks = (await store.list(keys.blocks(net.id)))[0]
    assert len(used) == 200 and len(blocks) == 4   # 63 or 64 usable addresses per /26
    await alloc.release(net, set())
    assert (await store.list(keys.blocks(net.id)))[0] == []


async def test_stray_block_keys_are_ignored():
    store = MemoryStore()
    net = _net("10.8.0.0/16")
    value = b'{"host": "h1"}'
    for stray in ("10.0.0.0-8", "10.8.0.0-16", "10.9.0.0-26", "10.8.0.1-26", "garbage"):
        await store.create(keys.blocks(net.id) + stray, value)
    alloc = HostAllocator(store, "h1")
    a = await alloc.allocate(net, set())
    assert a in net.network and pools.is_block(net.network, pools.block_of(net.network, a))


async def test_release_keeps_blocks_with_addresses_in_use_anywhere():
    """`used` is the union of local and store-held addresses: a block with any of them stays."""
    store = MemoryStore()
    net = _net("10.7.0.0/16")
    alloc = HostAllocator(store, "h1")
    local = await alloc.allocate(net, set())
    block = pools.block_of(net.network, local)
    store_held = next(a for a in pools.usable(net.network, block, A(net.gateway)) if a != local)
    await alloc.release(net, {store_held})   # the local container left; a CNI endpoint stays
    assert len((await store.list(keys.blocks(net.id)))[0]) == 1
    await alloc.release(net, {A("10.99.0.5")})  # addresses outside the pool hold nothing
    assert (await store.list(keys.blocks(net.id)))[0] == []
