"""A host's address allocator: claims blocks in the store, hands out addresses locally."""

from __future__ import annotations

import asyncio
import ipaddress
import zlib
from collections.abc import Container

from ..store import keys
from ..store.base import Store
from ..store.records import BlockRecord, NetworkRecord, decode
from .pools import PoolExhausted, block_at, block_count, block_of, is_block, pick_address

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


class HostAllocator:
    """Owns this host's blocks of every network's pool.

    Callers pass the addresses in use (see `release` for which); blocks are exclusive to one
    host, so no other host can be using an address of them. Time and memory depend on the
    blocks claimed, never on the pool's size (a /8 holds 262,144 blocks).
    """

    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.host = host
        self._mine: dict[str, set[IPv4Network]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, net_id: str) -> asyncio.Lock:
        return self._locks.setdefault(net_id, asyncio.Lock())

    async def _claimed(self, net: NetworkRecord) -> dict[IPv4Network, str]:
        """The pool's claimed blocks and their hosts. Keys that are not a block of this pool
        are skipped: a stray '10.0.0.0-8' must not hand a host the whole pool."""
        kvs, _ = await self.store.list(keys.blocks(net.id))
        out: dict[IPv4Network, str] = {}
        for kv in kvs:
            block = keys.try_parse_cidr_key(kv.key.rsplit("/", 1)[1])
            if block is None or not is_block(net.network, block):
                continue
            rec = decode(BlockRecord, kv.key, kv.value)
            if rec is not None:
                out[block] = rec.host
        return out

    async def _my_blocks(self, net: NetworkRecord) -> set[IPv4Network]:
        if net.id not in self._mine:
            claimed = await self._claimed(net)
            self._mine[net.id] = {b for b, h in claimed.items() if h == self.host}
        return self._mine[net.id]

    async def allocate(self, net: NetworkRecord, used: Container[IPv4Address]) -> IPv4Address:
        """Hold `lock(net.id)` while calling and until the address is recorded in `used`."""
        subnet, gateway = net.network, IPv4Address(net.gateway)
        mine = await self._my_blocks(net)
        addr = pick_address(subnet, gateway, mine, used)
        while addr is None:
            block = await self._claim_block(net)
            mine.add(block)
            addr = pick_address(subnet, gateway, [block], used)
        return addr

    async def _claim_block(self, net: NetworkRecord) -> IPv4Network:
        value = BlockRecord(host=self.host).to_json()
        subnet = net.network
        claimed = await self._claimed(net)
        count = block_count(subnet)
        # Each host starts its search at its own place (from its name): hosts starting
        # containers at once rarely race for one block. Addresses inside a block still go
        # in order (10.0.0.2, .3, …, as in the seed). The walk computes each block from its
        # index: it visits the claimed blocks it meets and stops at the first free one.
        start = zlib.crc32(self.host.encode()) % count
        if len(claimed) < count:
            for step in range(count):
                block = block_at(subnet, (start + step) % count)
                if block not in claimed and await self.store.create(keys.block(net.id, block),
                                                                    value):
                    return block
        raise PoolExhausted(f"network {net.name}: address pool {net.subnet} is full")

    async def release(self, net: NetworkRecord, used: set[IPv4Address]) -> None:
        """Give back this host's blocks of `net` in which no address is used.

        Contract: `used` holds every address of `net` that may be in use in this host's
        blocks: the union of what the agent holds locally (its containers and the endpoints
        attached for any runtime) and of the store's endpoint records of this host. A block
        is deleted only when none of them falls in it; an address still in use must never
        go back to the pool, where another host could claim its block and hand it out again.
        """
        mine = await self._my_blocks(net)
        busy = {block_of(net.network, a) for a in used if a in net.network}
        for block in [b for b in mine if b not in busy]:
            mine.discard(block)
            await self.store.delete(keys.block(net.id, block))

    def forget(self, net_id: str) -> None:
        self._mine.pop(net_id, None)
        self._locks.pop(net_id, None)

    async def reclaim(self, net: NetworkRecord, ip: IPv4Address) -> bool:
        """After a restart: claim again the block holding an address this host still uses
        (it may have been collected while the agent was away). False if another host
        owns it now (the address itself is still guarded by its endpoint key)."""
        if ip not in net.network:
            return False
        block = block_of(net.network, ip)
        mine = await self._my_blocks(net)
        if block in mine:
            return True
        if await self.store.create(keys.block(net.id, block),
                                   BlockRecord(host=self.host).to_json()):
            mine.add(block)
            return True
        return False
