"""A host's address allocator: claims blocks in the store, hands out addresses locally."""

from __future__ import annotations

import asyncio
import zlib
import ipaddress

from ..store import keys
from ..store.base import Store
from ..store.records import BlockRecord, NetworkRecord, decode
from .pools import PoolExhausted, blocks_of, pick_address

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


class HostAllocator:
    """Owns this host's blocks of every network's pool.

    Callers pass the addresses already in use on this host (its live endpoints); blocks are
    exclusive to one host, so nothing else can be using an address of them.
    """

    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.host = host
        self._mine: dict[str, set[IPv4Network]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, net_id: str) -> asyncio.Lock:
        return self._locks.setdefault(net_id, asyncio.Lock())

    async def _claimed(self, net_id: str) -> dict[IPv4Network, str]:
        kvs, _ = await self.store.list(keys.blocks(net_id))
        out: dict[IPv4Network, str] = {}
        for kv in kvs:
            rec = decode(BlockRecord, kv.key, kv.value)
            if rec is not None:
                out[keys.parse_cidr_key(kv.key.rsplit("/", 1)[1])] = rec.host
        return out

    async def _my_blocks(self, net_id: str) -> set[IPv4Network]:
        if net_id not in self._mine:
            claimed = await self._claimed(net_id)
            self._mine[net_id] = {b for b, h in claimed.items() if h == self.host}
        return self._mine[net_id]

    async def allocate(self, net: NetworkRecord, used: set[IPv4Address]) -> IPv4Address:
        """Hold `lock(net.id)` while calling and until the address is recorded in `used`."""
        subnet, gateway = net.network, IPv4Address(net.gateway)
        mine = await self._my_blocks(net.id)
        addr = pick_address(subnet, gateway, mine, used)
        while addr is None:
            block = await self._claim_block(net)
            mine.add(block)
            addr = pick_address(subnet, gateway, [block], used)
        return addr

    async def _claim_block(self, net: NetworkRecord) -> IPv4Network:
        value = BlockRecord(host=self.host).to_json()
        claimed = await self._claimed(net.id)
        # Each host starts its search at its own place (from its name): hosts starting
        # containers at once rarely race for one block. Addresses inside a block still go
        # in order (10.0.0.2, .3, …, as in the seed).
        free = [b for b in blocks_of(net.network) if b not in claimed]
        start = zlib.crc32(self.host.encode()) % len(free) if free else 0
        for block in free[start:] + free[:start]:
            if await self.store.create(keys.block(net.id, block), value):
                return block
        raise PoolExhausted(f"network {net.name}: address pool {net.subnet} is full")

    async def release(self, net: NetworkRecord, used: set[IPv4Address]) -> None:
        """Give back this host's blocks of `net` that no longer hold a used address."""
        mine = await self._my_blocks(net.id)
        for block in list(mine):
            if not any(a in block for a in used):
                mine.discard(block)
                await self.store.delete(keys.block(net.id, block))

    def forget(self, net_id: str) -> None:
        self._mine.pop(net_id, None)
        self._locks.pop(net_id, None)

    async def reclaim(self, net: NetworkRecord, ip: IPv4Address) -> bool:
        """After a restart: claim again the block holding an address this host still uses
        (it may have been collected while the agent was away). False if another host
        owns it now (the address itself is still guarded by its endpoint key)."""
        for block in blocks_of(net.network):
            if ip in block:
                break
        else:
            return False
        mine = await self._my_blocks(net.id)
        if block in mine:
            return True
        if await self.store.create(keys.block(net.id, block),
                                   BlockRecord(host=self.host).to_json()):
            mine.add(block)
            return True
        return False
