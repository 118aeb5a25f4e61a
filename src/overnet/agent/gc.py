"""Garbage collection of dead hosts' records.

A host is dead when its presence on a network (its liveness record there, under a short
lease: agent/membership.py) has been gone for the whole grace period, continuously, as seen
by this agent, and the store holds no liveness record of it (`alive/<host>`, read before
anything is deleted). An agent that is merely down (restarting,
cut off from the store) comes back well within the grace and re-publishes what it has, so
its containers never lose their records.

Its address blocks are kept much longer (`block_grace`, a day by default, like flannel's
leases): its containers may still be running with those addresses, and while the blocks are
its own no other host hands them out. An agent that comes back after its endpoints were
collected finds its blocks and publishes its endpoints again.

An agent collects in the networks its copy of the store holds (store/scoped.py): those it has
containers on, or read lately. A dead host's records in a network no live host is on stay
until a host joins that network: they hold addresses nobody is handed out meanwhile."""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..store import keys
from ..store.base import Delete, Store
from .view import ClusterView

log = logging.getLogger(__name__)

_OWNED = ("endpoints", "services", "blocks", "members")   # records naming their host


class GarbageCollector:
    def __init__(self, store: Store, view: ClusterView, me: str, grace: float,
                 block_grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.view = view
        self.me = me
        self.grace = grace
        self.block_grace = max(block_grace, grace)
        self.clock = clock
        self.dead_since: dict[str, float] = {}
        self.collected = 0

    def owners(self) -> dict[str, list[str]]:
        """Keys of endpoints, services, blocks and memberships by owning host, for hosts not
        present on the network of the key."""
        out: dict[str, list[str]] = {}
        for key in [k for kind in _OWNED for k in self.view.keys_under(keys.ROOT + kind + "/")]:
            parts = keys.split(key)
            if len(parts) != 3:
                continue
            if parts[0] == "members":
                host = parts[2]
            else:
                host = getattr(self.view.record_at(key), "host", None)   # parsed once
            if host and host != self.me and host not in self.view.present(parts[1]):
                out.setdefault(host, []).append(key)
        return out

    async def collect(self) -> int:
        """One pass; returns how many records it deleted."""
        now = self.clock()
        owners = self.owners()
        for host in list(self.dead_since):
            if host not in owners:
                del self.dead_since[host]
        deleted = 0
        for host, owned in owners.items():
            since = self.dead_since.setdefault(host, now)
            due = [k for k in owned if now - since >= (
                self.block_grace if k.startswith(keys.BLOCKS) else self.grace)]
            if not due:
                continue
            if await self.store.get(keys.alive(host)) is not None:
                # not present on these networks but alive: an agent that has yet to put its
                # presence back (or an older one that writes none); nothing of it goes
                log.info("host %s is alive but not present where %s is: keeping its "
                         "records", host, due[0])
                self.dead_since[host] = now
                continue
            log.warning("host %s dead for %.0fs: removing %d of its records", host,
                        now - since, len(due))
            await self.store.txn([], [Delete(k) for k in due])
            deleted += len(due)
        self.collected += deleted
        return deleted
