"""Every network's resolver on this host, kept in line with what the agent wants (level-triggered).

The agent computes, whenever its copy of the store changes, which networks have local
endpoints and their name tables, and calls `sync` with that; `sync` starts the missing
resolvers, swaps tables in the running ones (no restart: the next query sees the new table),
restarts one whose address or namespace changed, and stops the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from overnet.dns.resolvconf import parse_upstream
from overnet.dns.table import NameTable

if TYPE_CHECKING:       # the server (and dnspython, ~1.5 MB) loads with the first resolver
    from overnet.dns.server import DnsServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolverSpec:
    """Where a network's resolver listens and what it answers."""

    address: str  # the network's gateway address
    netns_path: str | None  # the network's namespace (None: the agent's own)
    table: NameTable


@dataclass
class _Running:
    server: DnsServer
    spec: ResolverSpec


class Resolvers:
    def __init__(self, upstreams: list[str], timeout: float = 2.0, port: int = 53) -> None:
        for upstream in upstreams:
            parse_upstream(upstream)  # fail here, naming the bad one, not per network later
        self._upstreams = list(upstreams)
        self._timeout = timeout
        self._port = port
        self._running: dict[str, _Running] = {}

    async def sync(self, want: Mapping[str, ResolverSpec]) -> dict[str, str]:
        """Make the running resolvers exactly `want` (keyed by network ID). Returns the networks
        whose resolver could not start, with the reason; the others are not held up by them."""
        for network in [n for n in self._running if n not in want]:
            await self.remove(network)
        errors: dict[str, str] = {}
        for network, spec in want.items():
            try:
                await self.ensure(network, spec)
            except OSError as exc:
                log.warning("network %s: DNS resolver not started: %s", network, exc)
                errors[network] = str(exc)
        return errors

    async def ensure(self, network: str, spec: ResolverSpec) -> tuple[str, int]:
        """Start the network's resolver, or give the running one `spec.table`; a changed address
        or namespace restarts it. Returns where it listens; OSError if it cannot listen."""
        running = self._running.get(network)
        if running is not None and _same_place(running.spec, spec):
            running.spec = spec  # the provider reads it per query
            assert running.server.address is not None
            return running.server.address
        if running is not None:
            await self.remove(network)
        from overnet.dns.server import DnsServer
        entry = _Running(server=DnsServer(lambda: entry.spec.table, self._upstreams,
                                          self._timeout), spec=spec)
        where = await entry.server.start(spec.address, self._port, spec.netns_path)
        self._running[network] = entry
        return where

    async def remove(self, network: str) -> bool:
        """Stop the network's resolver; False if none ran."""
        running = self._running.pop(network, None)
        if running is None:
            return False
        await running.server.stop()
        return True

    async def close(self) -> None:
        for network in list(self._running):
            await self.remove(network)

    def address(self, network: str) -> tuple[str, int] | None:
        running = self._running.get(network)
        return running.server.address if running is not None else None

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per network ID, for metrics."""
        return {n: dict(r.server.stats) for n, r in self._running.items()}


def _same_place(a: ResolverSpec, b: ResolverSpec) -> bool:
    return (a.address, a.netns_path) == (b.address, b.netns_path)
