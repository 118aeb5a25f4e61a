"""The agent's copy of the store, scoped to what its host needs.

Every host needs the cluster-wide records: networks, hosts, liveness and `doctor` requests
(keys.GLOBAL, O(networks + hosts)). The per-network records, endpoints, services and
address blocks (keys.PER_NETWORK), are most of the store, O(containers), and a host needs
them only for the networks it has containers on. A copy of the whole store made every host
hold and receive all of it: at 100,000 endpoints, 73 MB per agent and one watch event per
host for every container started anywhere (etcd's CPU per write grows with every watcher).

So the copy is a set of `Mirror`s, each resilient on its own (store/mirror.py): one per
cluster-wide kind, and one per per-network kind of each network in scope. A network comes
into scope with `need` (an API read) or `hold` (an attach, for its whole length: its
addresses and peers are read from the copy), and leaves it `linger` seconds after the last
use, once nothing keeps it: no local endpoint (`keep`), no hold, and no record of this host
left in the copy (a stray the sweep has yet to remove). Readers see one mapping of every
key in scope (`items`), generations and key indexes as a single Mirror gives them, and one
stream of changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, AsyncIterator, Callable

from . import keys
from .base import Event, Store
from .mirror import Item, Mirror

log = logging.getLogger("overnet.store.scoped")

_EPOCHS = itertools.count(1)
OUT_OF_SCOPE = (-1, 0)    # the generation of a per-network prefix no mirror holds


class Items(Mapping):
    """Every key in scope, read through the mirror that holds it (no copy)."""

    def __init__(self, owner: ScopedMirror) -> None:
        self._owner = owner

    def __getitem__(self, key: str) -> Item:
        m = self._owner.mirror_of(key)
        if m is None:
            raise KeyError(key)
        return m.items[key]

    def get(self, key: str, default: Any = None) -> Any:
        m = self._owner.mirror_of(key)
        return default if m is None else m.items.get(key, default)

    def __contains__(self, key: object) -> bool:
        m = self._owner.mirror_of(key) if isinstance(key, str) else None
        return m is not None and key in m.items

    def __iter__(self) -> Iterator[str]:
        for m in self._owner.mirrors():
            yield from list(m.items)

    def __len__(self) -> int:
        return sum(len(m.items) for m in self._owner.mirrors())


class ScopedMirror:
    def __init__(self, store: Store, *, keep: Callable[[str], bool] = lambda net: False,
                 mine: Callable[[str], bool] = lambda key: False, linger: float = 60.0,
                 **mirror_options: float) -> None:
        self.store = store
        self.keep = keep          # net_id -> whether this host has an endpoint on it
        self.mine = mine          # a key in scope -> whether this host owns its record
        self.linger = linger
        self._options = mirror_options
        self._epoch: dict[str, int] = {}     # prefix -> its mirror's epoch (one at a time)
        self._subscribers: list[asyncio.Queue[list[Event]]] = []
        self._global = {p: self._make(p) for p in keys.GLOBAL}
        self._networks: dict[str, tuple[Mirror, ...]] = {}   # net_id -> one per PER_NETWORK
        self._starting: dict[str, asyncio.Task[tuple[Mirror, ...]]] = {}
        self._holds: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._changes = 0          # every change of the copy, scope changes included
        self._retired = [0, 0]     # relists, resumes of mirrors no longer in scope
        self.items = Items(self)

    # --- the parts -----------------------------------------------------------------------

    def _make(self, prefix: str) -> Mirror:
        m = Mirror(self.store, prefix, **self._options)
        m.listeners.append(self._changed)
        self._epoch[prefix] = next(_EPOCHS)
        return m

    def mirrors(self) -> list[Mirror]:
        return [*self._global.values(), *(m for ms in self._networks.values() for m in ms)]

    def mirror_of(self, key: str) -> Mirror | None:
        """The mirror that holds `key` (or would), None when its network is out of scope."""
        kind_end = key.find("/", len(keys.ROOT))
        if kind_end < 0 or not key.startswith(keys.ROOT):
            return None
        kind = key[:kind_end + 1]
        if kind in self._global:
            return self._global[kind]
        if kind not in keys.PER_NETWORK:
            return None
        net_end = key.find("/", kind_end + 1)
        ms = self._networks.get(key[kind_end + 1:net_end if net_end >= 0 else None])
        return ms[keys.PER_NETWORK.index(kind)] if ms else None

    def _exact(self, prefix: str) -> Mirror | None:
        m = self.mirror_of(prefix)
        return m if m is not None and m.prefix == prefix else None

    def networks(self) -> set[str]:
        """The networks in scope."""
        return set(self._networks)

    # --- what a single Mirror offers -----------------------------------------------------

    @property
    def revision(self) -> int:
        return max(m.revision for m in self.mirrors())

    @property
    def state(self) -> str:
        states = {m.state for m in self.mirrors()}
        return next((s for s in ("waiting", "resyncing") if s in states), "in-sync")

    @property
    def relists(self) -> int:
        return self._retired[0] + sum(m.relists for m in self.mirrors())

    @property
    def resumes(self) -> int:
        return self._retired[1] + sum(m.resumes for m in self.mirrors())

    async def start(self) -> None:
        """List the cluster-wide kinds and watch them (raises StoreUnavailable if a first
        list fails)."""
        try:
            await asyncio.gather(*(m.start() for m in self._global.values()))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for task in self._starting.values():
            task.cancel()
        for m in self.mirrors():
            await m.stop()

    def subscribe(self) -> asyncio.Queue[list[Event]]:
        """Every later change as batches of events, a network's whole content included when
        it comes into scope (not when it leaves: what is out of scope reads as absent)."""
        queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def generation(self, prefix: str) -> Any:
        """Changes whenever a key under `prefix` changes or its network enters or leaves
        scope: per mirror for a mirror's own prefix, else with any change of the copy."""
        m = self._exact(prefix)
        if m is not None:
            return (self._epoch[prefix], m.generation(prefix))
        if self._per_network(prefix):
            return OUT_OF_SCOPE
        return self._changes

    def keys_in(self, prefix: str) -> list[str] | None:
        """The keys under a mirror's own prefix, or under a per-network kind (every network
        in scope); None for any other prefix."""
        m = self._exact(prefix)
        if m is not None:
            return list(m.items)
        if self._per_network(prefix):
            return []
        if prefix in keys.PER_NETWORK:
            i = keys.PER_NETWORK.index(prefix)
            return [k for ms in self._networks.values() for k in ms[i].items]
        return None

    async def wait_for(self, key: str, revision: int, timeout: float | None = None) -> None:
        """Return once the copy has caught up with a write of `key` at `revision` (at once
        if that key is out of scope)."""
        m = self.mirror_of(key)
        if m is not None:
            await m.wait_revision(revision, timeout)

    # --- scope ---------------------------------------------------------------------------

    async def need(self, *net_ids: str) -> None:
        """Bring networks into scope (listed, then watched), for at least `linger` s."""
        await asyncio.gather(*(self._ensure(n) for n in net_ids))

    @contextlib.asynccontextmanager
    async def hold(self, net_id: str) -> AsyncIterator[None]:
        """Keep a network in scope for as long as the block runs."""
        self._holds[net_id] = self._holds.get(net_id, 0) + 1
        try:
            await self._ensure(net_id)
            yield
        finally:
            self._holds[net_id] -= 1
            if not self._holds[net_id]:
                del self._holds[net_id]
            self._used[net_id] = time.monotonic()

    async def _ensure(self, net_id: str) -> None:
        self._used[net_id] = time.monotonic()
        if net_id in self._networks:
            return
        task = self._starting.get(net_id)
        if task is None:
            task = self._starting[net_id] = asyncio.create_task(self._open(net_id))
            task.add_done_callback(lambda _: self._starting.pop(net_id, None))
        await asyncio.shield(task)      # the network is in scope from its end on (_open)
        self._used[net_id] = time.monotonic()

    async def _open(self, net_id: str) -> tuple[Mirror, ...]:
        ms = tuple(self._make(kind + net_id + "/") for kind in keys.PER_NETWORK)
        try:
            await asyncio.gather(*(m.start() for m in ms))
        except BaseException:
            for m in ms:
                await m.stop()
            raise
        self._networks[net_id] = ms
        self._changes += 1
        log.debug("network %s in scope: %d records", net_id[:12],
                  sum(len(m.items) for m in ms))
        return ms

    async def prune(self, now: float | None = None) -> list[str]:
        """Take out of scope the networks nothing keeps; returns them."""
        now = time.monotonic() if now is None else now
        gone = [n for n, ms in self._networks.items()
                if not self._holds.get(n) and now - self._used.get(n, 0) >= self.linger
                and not self.keep(n) and all(m.state == "in-sync" for m in ms)
                and not any(self.mine(key) for m in ms for key in list(m.items))]
        for net_id in gone:
            ms = self._networks.pop(net_id)
            self._used.pop(net_id, None)
            self._changes += 1
            for m in ms:
                self._retired[0] += m.relists
                self._retired[1] += m.resumes
                self._epoch.pop(m.prefix, None)
                await m.stop()
            log.debug("network %s out of scope", net_id[:12])
        return gone

    async def prune_loop(self, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            await self.prune()

    # --- internals -----------------------------------------------------------------------

    def _per_network(self, prefix: str) -> bool:
        """Whether `prefix` is one network's prefix of a per-network kind."""
        kind_end = prefix.find("/", len(keys.ROOT))
        return (prefix[:kind_end + 1] in keys.PER_NETWORK
                and prefix.count("/", kind_end + 1) == 1 and prefix.endswith("/"))

    def _changed(self, events: list[Event]) -> None:
        self._changes += 1
        for queue in self._subscribers:
            queue.put_nowait(events)
