"""Service discovery through /etc/hosts: what a container's hosts file says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

STANDARD = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


@dataclass(frozen=True)
class Peer:
    """One name-bearing endpoint of a network, as the hosts file lists it."""
    ip: str
    name: str
    network: str               # network name, for the `name.network` line
    aliases: tuple[str, ...] = ()


def render(own_ip: str | None, hostname: str, peers: Iterable[Peer] | str,
           links: Iterable[tuple[str, str]] = ()) -> str:
    """The seed's layout: own address and hostname, the standard lines, then for every
    container of each network one `IP name` and one `IP name.network` line (peers in the order
    given: the caller sorts them by creation), then `IP alias name` lines for --link.
    `peers` may come already rendered by peer_lines (the same for every container of a
    network: rendered once per refresh, not once per container)."""
    head = f"{own_ip}\t{hostname}\n" if own_ip else ""
    block = peers if isinstance(peers, str) else peer_lines(peers)
    return "".join([head, STANDARD, block, *(f"{ip}\t{names}\n" for ip, names in links)])


def peer_lines(peers: Iterable[Peer]) -> str:
    lines = []
    for p in peers:
        lines.append(f"{p.ip}\t{p.name}\n")
        lines.append(f"{p.ip}\t{p.name}.{p.network}\n")
        lines.extend(f"{p.ip}\t{alias}\n" for alias in p.aliases)
    return "".join(lines)
