"""Address pools and blocks: pure arithmetic, no store, no kernel.

A network's pool is split into blocks; each host claims whole blocks in the store and hands out
addresses from its own blocks only, so two hosts can never give out the same address and a
container start needs no cluster-wide lock.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Iterator

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

DEFAULT_RANGE = "10.128.0.0/9"
DEFAULT_POOL_PREFIX = 16


class IpamError(ValueError):
    pass


class PoolExhausted(IpamError):
    pass


def parse_subnet(value: str) -> IPv4Network:
    """A user's --subnet: an IPv4 CIDR with room for at least two containers."""
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise IpamError(f"invalid subnet {value!r}: expected an IPv4 CIDR such as 10.1.0.0/16") \
            from None
    if "/" not in value:
        raise IpamError(f"invalid subnet {value!r}: the prefix length is missing (e.g. {value}/24)")
    if net.prefixlen > 29:
        raise IpamError(f"invalid subnet {value!r}: /{net.prefixlen} is too small, use /29 or larger")
    if str(net.network_address) != value.split("/")[0]:
        raise IpamError(f"invalid subnet {value!r}: host bits set (did you mean {net}?)")
    return net


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
    """The first /prefix of the default range that overlaps no taken pool."""
    taken = list(taken)
    for candidate in ipaddress.IPv4Network(default_range).subnets(new_prefix=prefix):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise PoolExhausted(f"no free /{prefix} left in the default address range {default_range}: "
                        "give the network a --subnet")


def block_prefix(subnet: IPv4Network) -> int:
    """Block size for a pool: /26 for big pools, /28 for a /24, the whole pool when tiny."""
    return max(subnet.prefixlen, min(max(26, subnet.prefixlen + 4), 28))


def blocks_of(subnet: IPv4Network) -> Iterator[IPv4Network]:
    return subnet.subnets(new_prefix=block_prefix(subnet))


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
                 used: set[IPv4Address]) -> IPv4Address | None:
    """Lowest free address in the host's own blocks, or None if they are all full."""
    for block in sorted(my_blocks):
        for addr in usable(subnet, block, gateway):
            if addr not in used:
                return addr
    return None


def mac_for(ip: IPv4Address) -> str:
    """Docker's scheme: 02:42 then the four address bytes; unique inside a network."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)
