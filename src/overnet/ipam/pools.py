"""Address pools and blocks: pure arithmetic, no store, no kernel.

A network's pool is split into blocks; each host claims whole blocks in the store and hands out
addresses from its own blocks only, so two hosts can never give out the same address and a
container start needs no cluster-wide lock.
"""

from __future__ import annotations

import ipaddress
from typing import Container, Iterable, Iterator

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

DEFAULT_RANGE = "10.128.0.0/9"
DEFAULT_POOL_PREFIX = 16
MIN_POOL_PREFIX = 8   # a /8 holds 16 million addresses; bigger pools are mistakes
# Ranges no container address may come from: packets to or from them never leave a host.
SPECIAL = {IPv4Network("0.0.0.0/8"): "'this network'", IPv4Network("127.0.0.0/8"): "loopback",
           IPv4Network("169.254.0.0/16"): "link-local", IPv4Network("224.0.0.0/4"): "multicast",
           IPv4Network("240.0.0.0/4"): "reserved and broadcast"}


class IpamError(ValueError):
    pass


class PoolExhausted(IpamError):
    pass


def parse_subnet(value: str) -> IPv4Network:
    """A user's --subnet: an IPv4 CIDR with room for at least two containers, at most a /8,
    outside the ranges no container may use."""
    if not isinstance(value, str):
        raise IpamError(f"invalid subnet {value!r}: expected a string such as 10.1.0.0/16")
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise IpamError(f"invalid subnet {value!r}: expected an IPv4 CIDR such as 10.1.0.0/16") \
            from None
    if "/" not in value:
        raise IpamError(f"invalid subnet {value!r}: the prefix length is missing (e.g. {value}/24)")
    if net.prefixlen > 29:
        raise IpamError(f"invalid subnet {value!r}: /{net.prefixlen} is too small, "
                        "use /29 or larger")
    if net.prefixlen < MIN_POOL_PREFIX:
        raise IpamError(f"invalid subnet {value!r}: /{net.prefixlen} is too large, the "
                        f"largest pool is a /{MIN_POOL_PREFIX}")
    if str(net.network_address) != value.split("/")[0]:
        raise IpamError(f"invalid subnet {value!r}: host bits set (did you mean {net}?)")
    for special, what in SPECIAL.items():
        if net.overlaps(special):
            raise IpamError(f"invalid subnet {value!r}: overlaps {special} ({what} addresses)")
    return net


def check_no_overlap(subnet: IPv4Network, host_networks: Iterable[IPv4Network]) -> None:
    """Refuse a pool overlapping a network this host already reaches (its routes, its
    underlay addresses' networks): containers would shadow real hosts. Default routes
    (prefix length 0) overlap everything and are skipped."""
    for net in host_networks:
        if net.prefixlen > 0 and subnet.overlaps(net):
            raise IpamError(f"subnet {subnet} overlaps {net}, a network this host already "
                            "reaches (a route or the underlay): choose another --subnet")


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    return subnet.network_address + 1


def parse_gateway(value: str, subnet: IPv4Network) -> IPv4Address:
    try:
        gw = ipaddress.IPv4Address(value)
    except ValueError:
        raise IpamError(f"invalid gateway {value!r}: expected an IPv4 address") from None
    if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
        raise IpamError(f"invalid gateway {value}: not a usable address of subnet {subnet}")
    return gw


def next_free_pool(taken: Iterable[IPv4Network], default_range: str = DEFAULT_RANGE,
                   prefix: int = DEFAULT_POOL_PREFIX) -> IPv4Network:
    """The first /prefix of the default range that overlaps no taken pool.
    Jumps past each taken pool: O(t log t) in the taken pools, whatever the range's size."""
    whole = ipaddress.IPv4Network(default_range)
    size = 1 << (32 - prefix)
    last = int(whole.broadcast_address)
    candidate = int(whole.network_address)
    for low, high in sorted((int(t.network_address), int(t.broadcast_address)) for t in taken):
        if low > candidate + size - 1:
            break                        # this and every later pool start past the candidate
        if high >= candidate:            # overlaps: the next aligned start after it
            candidate = (high // size + 1) * size
    if prefix < whole.prefixlen or candidate + size - 1 > last:
        raise PoolExhausted(f"no free /{prefix} left in the default address range "
                            f"{default_range}: give the network a --subnet")
    return IPv4Network((candidate, prefix))


def block_prefix(subnet: IPv4Network) -> int:
    """Block size for a pool: /26 for big pools, /28 for a /24, the whole pool when tiny."""
    return max(subnet.prefixlen, min(max(26, subnet.prefixlen + 4), 28))


def blocks_of(subnet: IPv4Network) -> Iterator[IPv4Network]:
    return subnet.subnets(new_prefix=block_prefix(subnet))


def block_count(subnet: IPv4Network) -> int:
    return 1 << (block_prefix(subnet) - subnet.prefixlen)


def block_at(subnet: IPv4Network, index: int) -> IPv4Network:
    """The index-th block of the pool, without listing the others."""
    prefix = block_prefix(subnet)
    return IPv4Network((int(subnet.network_address) + (index << (32 - prefix)), prefix))


def block_of(subnet: IPv4Network, addr: IPv4Address) -> IPv4Network:
    """The block of the pool holding `addr` (which must be in the pool)."""
    prefix = block_prefix(subnet)
    return IPv4Network((int(addr) >> (32 - prefix) << (32 - prefix), prefix))


def is_block(subnet: IPv4Network, block: IPv4Network) -> bool:
    """Whether `block` is one of the pool's blocks (a store key may say anything)."""
    return block.prefixlen == block_prefix(subnet) and block.subnet_of(subnet)


def usable(subnet: IPv4Network, block: IPv4Network, gateway: IPv4Address) -> Iterator[IPv4Address]:
    """Addresses of `block` that may go to containers: never the pool's network, broadcast or
    gateway address (a block's own first and last addresses are fine inside a bigger pool)."""
    reserved = {subnet.network_address, subnet.broadcast_address, gateway}
    for addr in block:
        # x.x.x.0 and x.x.x.255 are valid inside a bigger pool, but tools and people take
        # them for network and broadcast addresses: skip them when the pool allows.
        if addr not in reserved and (subnet.prefixlen > 23 or addr.packed[3] not in (0, 255)):
            yield addr


def pick_address(subnet: IPv4Network, gateway: IPv4Address, my_blocks: Iterable[IPv4Network],
                 used: Container[IPv4Address]) -> IPv4Address | None:
    """Lowest free address in the host's own blocks, or None if they are all full."""
    for block in sorted(my_blocks):
        for addr in usable(subnet, block, gateway):
            if addr not in used:
                return addr
    return None


def mac_for(ip: IPv4Address) -> str:
    """Docker's scheme: 02:42 then the four address bytes; unique inside a network."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)
