"""This host's place on the networks it has endpoints on.

Each network holds, for every host with endpoints on it, the host's name, address and MTU
twice: durable (`members/<net>/<host>`: what the network's endpoints are admitted against; an
agent that is down does not take its host's containers off the network) and under the host's
liveness lease (`present/<net>/<host>`: what the garbage collector and `host up/down` events
read). The hosts of a network receive a host's joins, restarts and departures; no other host
does (the cluster-wide `hosts/` and `alive/` records are mirrored by no agent).

The records are written with the host's first endpoint on a network, in the transaction that
claims its address; again by a reconcile pass that finds this host not a member (after the
agent restarted, its lease was granted again, or a record was deleted under it); and removed
once no endpoint of this host is left on the network. A lock per network orders a join
against a leave, so no endpoint is published into a network its host is leaving.

Agents from before these records existed write none: a host with endpoints on the network
but no membership there is adopted (`adopt`), so that a cluster can be upgraded one host at
a time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from typing import Any, Callable

from ..store import keys
from ..store.base import (Absent, Compare, Delete, Op, Put, Store, StoreError, TxnResult,
                          ValueIs)
from ..store.records import HostRecord, decode

log = logging.getLogger(__name__)

ADOPT_AFTER = 5.0     # s a host with endpoints on a network may go without being a member
LOOKED_UP = math.inf  # "first seen missing" of a host adopted (or looked up) already


class Membership:
    def __init__(self, store: Store, mirror: Any, me: str, record: bytes,
                 lease: Callable[[], int], in_use: Callable[[str], bool]) -> None:
        self.store = store
        self.mirror = mirror          # the agent's copy: wait_for()
        self.me = me
        self.record = record          # the HostRecord written on every network
        self.lease = lease            # the current liveness lease's ID
        self.in_use = in_use          # net_id -> whether this host has an endpoint on it
        self._joined: dict[str, int] = {}    # net_id -> revision of this run's join
        self._locks: dict[str, asyncio.Lock] = {}
        # net_id -> host -> when first seen missing (LOOKED_UP once adopted: not again until
        # it is no longer missing)
        self._missing: dict[str, dict[str, float]] = {}

    def _lock(self, net_id: str) -> asyncio.Lock:
        return self._locks.setdefault(net_id, asyncio.Lock())

    def keys(self, net_id: str) -> tuple[str, str]:
        """This host's two records on a network: its membership and its presence."""
        return keys.member(net_id, self.me), keys.presence(net_id, self.me)

    def mine(self, key: str) -> bool:
        """Whether a key is one of this host's records on some network."""
        parts = keys.split(key) if key.startswith(keys.ROOT) else ()
        return len(parts) == 3 and parts[0] in ("members", "present") and parts[2] == self.me

    async def publish(self, net_id: str, compares: list[Compare], ops: list[Op]) -> TxnResult:
        """store.txn(compares, ops), with this host's records on the network added when it is
        not a member yet."""
        if net_id in self._joined:
            return await self.store.txn(compares, ops)
        async with self._lock(net_id):
            if net_id in self._joined:
                return await self.store.txn(compares, ops)
            member, presence = self.keys(net_id)
            result = await self.store.txn(compares, [
                *ops, Put(member, self.record), Put(presence, self.record, self.lease())])
            if result.succeeded:
                self._joined[net_id] = result.revision
            return result

    async def ensure(self, net_id: str) -> None:
        """Be a member of a network this host has endpoints on (the durable record is
        written only when it differs: the others re-admit the network on every change)."""
        if net_id in self._joined:
            return
        async with self._lock(net_id):
            if net_id in self._joined or not self.in_use(net_id):
                return
            member, presence = self.keys(net_id)
            leased = Put(presence, self.record, self.lease())
            result = await self.store.txn([ValueIs(member, self.record)], [leased],
                                          [Put(member, self.record), leased])
            self._joined[net_id] = result.revision

    async def leave(self, net_id: str) -> bool:
        """Remove this host's records from a network it has no endpoint left on. The durable
        one goes first and the leased one once this copy saw that: a host whose presence
        goes while it is still a member went down, it did not leave (observe/observer.py)."""
        async with self._lock(net_id):
            if self.in_use(net_id):
                return False
            self._joined.pop(net_id, None)
            self._missing.pop(net_id, None)
            member, presence = self.keys(net_id)
            result = await self.store.txn([ValueIs(member, self.record)], [Delete(member)])
            if result.succeeded:
                try:
                    await self.mirror.wait_for(member, result.revision, 2.0)
                except TimeoutError:
                    pass
            await self.store.txn([ValueIs(presence, self.record)], [Delete(presence)])
            return True

    def _holds(self, net_id: str) -> bool:
        """Whether this host is, or the copy says it is, on the network."""
        return net_id in self._joined or any(k in self.mirror.items for k in self.keys(net_id))

    async def leave_quietly(self, net_id: str) -> None:
        """After a detach: leave() if that was this host's last endpoint on the network (the
        sweep tries again what the store did not take)."""
        if self.in_use(net_id) or not self._holds(net_id):
            return
        try:
            await self.leave(net_id)
        except StoreError as e:
            log.info("network %s: this host's records stay for now (%s)", net_id[:12], e)

    def strays(self) -> list[str]:
        """Networks in the copy that hold this host's records but no endpoint of it."""
        return [n for n in self.mirror.networks() if not self.in_use(n) and self._holds(n)]

    async def adopt(self, net_id: str, missing: Iterable[str],
                    now: float | None = None) -> int:
        """Hosts that have endpoints on the network and are not its members: agents older
        than members/ write none. A host still missing `ADOPT_AFTER` s after a pass first
        saw it so (not a membership on its way: it comes in one transaction with the
        endpoint, on another watch) gets its record on the network copied from its own
        (`hosts/<host>`), so that its endpoints are admitted as before; its presence stays
        absent (the garbage collector reads `alive/<host>` before it deletes anything). Once
        each time it goes missing: a host that left the network (or was collected) and comes
        back with an older agent is adopted again, a host rolled back to an older agent too.
        A host the cluster has no record of is logged then (its endpoints stay unprogrammed),
        not on every first endpoint that came before its membership. Returns how many were
        adopted."""
        now = time.monotonic() if now is None else now
        missing = set(missing) - {self.me}
        seen = self._missing.setdefault(net_id, {})
        for host in set(seen) - missing:
            del seen[host]
        due = sorted(h for h in missing if now - seen.setdefault(h, now) >= ADOPT_AFTER)
        adopted = 0
        for host in due:
            seen[host] = LOOKED_UP
            kv = await self.store.get(keys.host(host))
            rec = decode(HostRecord, kv.key, kv.value) if kv else None
            if rec is None or rec.name != host:
                log.warning("network %s: not programming the endpoints of host %r: it is not "
                            "on the network, and the cluster has no record of it", net_id[:12],
                            host)
                continue
            member = keys.member(net_id, host)
            copy = HostRecord(name=host, address=rec.address, mtu=rec.mtu).to_json()
            if (await self.store.txn([Absent(member)], [Put(member, copy)])).succeeded:
                log.info("network %s: host %s writes no membership (an older agent): its "
                         "host record copied onto the network", net_id[:12], host)
                adopted += 1
        return adopted

    def lost(self, key: str, revision: int) -> str | None:
        """A record of this host was deleted (its lease lapsed, or someone removed it): the
        network to join again, unless the deletion is older than this run's join."""
        if not self.mine(key):
            return None
        net_id = keys.split(key)[1]
        if revision <= self._joined.get(net_id, revision):
            return None
        self._joined.pop(net_id, None)
        return net_id

    def renewed(self) -> None:
        """A new lease: every presence is to be put again under it."""
        self._joined.clear()
