"""An in-memory Store with etcd's semantics, for unit tests.

`MemoryState` is what an etcd cluster holds (keys, revision counter, leases, event
history); `MemoryStore` is one client of it. Several clients can share one state, so a
test can run two "agents" against one store, and take one client offline
(`set_available(False)`) to simulate a lost connection.

Everything runs on the asyncio event loop with no awaits inside a write, so every write
and transaction is atomic. Leases expire on time.monotonic: expiry is checked on every
call, and every open watch wakes up at the next lease deadline (at least every 0.5 s) to
check too, so expiry produces delete events promptly even when nobody calls.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from .base import (KV, Absent, Compacted, Compare, Delete, Event, Lease, LeaseLost,
                   ModRevision, Op, Put, Store, StoreError, StoreUnavailable, TxnResult,
                   ValueIs)

# An idle watch still wakes this often to expire leases (and so emit their delete events).
_MAX_WATCH_SLEEP = 0.5


@dataclass
class _LeaseState:
    ttl: float
    deadline: float
    keys: set[str] = field(default_factory=set)


class _Watcher:
    def __init__(self, prefix: str, client: MemoryStore) -> None:
        self.prefix = prefix
        self.client = client
        self.queue: asyncio.Queue[list[Event] | StoreError] = asyncio.Queue()

    def offer(self, item: list[Event] | StoreError) -> bool:
        """Queue matching events (or an error); False if the watcher's loop is gone."""
        if isinstance(item, list):
            item = [e for e in item if e.key.startswith(self.prefix)]
            if not item:
                return True
        try:
            self.queue.put_nowait(item)
        except RuntimeError:  # its event loop was closed (an abandoned watch from an old test)
            return False
        return True


class MemoryState:
    """The shared backing state of one in-memory "cluster"."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.revision = 1  # like a fresh etcd: the first write gets revision 2
        self.compact_revision = 0
        self.kvs: dict[str, KV] = {}
        self.history: list[Event] = []
        self.leases: dict[int, _LeaseState] = {}
        self._lease_ids = itertools.count(0x694D_0000_0001)
        self._watchers: set[_Watcher] = set()

    # --- leases ---------------------------------------------------------------------------

    def expire(self) -> None:
        """Revoke every lease whose deadline passed, oldest first."""
        now = time.monotonic()
        due = sorted((st.deadline, lid) for lid, st in self.leases.items() if st.deadline <= now)
        for _, lid in due:
            self.revoke(lid)

    def next_deadline(self) -> float | None:
        return min((st.deadline for st in self.leases.values()), default=None)

    def grant(self, ttl: float) -> Lease:
        if ttl <= 0:
            raise StoreError(f"lease TTL must be positive, got {ttl}")
        lid = next(self._lease_ids)
        self.leases[lid] = _LeaseState(ttl, time.monotonic() + ttl)
        return Lease(lid, ttl)  # type: ignore[arg-type]  # float TTLs allowed here for fast tests

    def refresh(self, lease_id: int) -> float:
        st = self.leases.get(lease_id)
        if st is None:
            raise LeaseLost(f"lease {lease_id:x} not found")
        st.deadline = time.monotonic() + st.ttl
        return st.ttl

    def revoke(self, lease_id: int) -> None:
        st = self.leases.pop(lease_id, None)
        if st is not None and st.keys:
            # etcd deletes all keys of a lease in one revision
            self.apply([Delete(k) for k in sorted(st.keys)])

    # --- reads and writes -----------------------------------------------------------------

    def check(self, compare: Compare) -> bool:
        kv = self.kvs.get(compare.key)
        if isinstance(compare, Absent):
            return kv is None
        if isinstance(compare, ModRevision):
            return (kv.mod_revision if kv else 0) == compare.revision
        if isinstance(compare, ValueIs):
            return kv is not None and kv.value == compare.value  # etcd: absent never matches
        raise TypeError(f"unknown compare {compare!r}")

    def apply(self, ops: list[Op]) -> int:
        """Run `ops` as one revision (bumped only if something changed); returns the revision."""
        puts = [op.key for op in ops if isinstance(op, Put)]
        if len(puts) != len(set(puts)):
            raise StoreError("duplicate key given in txn request")
        for op in ops:  # validate first: a bad lease fails the whole transaction, like etcd
            if isinstance(op, Put) and op.lease and op.lease not in self.leases:
                raise LeaseLost(f"lease {op.lease:x} not found")
        rev = self.revision + 1
        events: list[Event] = []
        for op in ops:
            if isinstance(op, Put):
                old = self.kvs.get(op.key)
                self._detach(old)
                self.kvs[op.key] = KV(op.key, op.value, old.create_revision if old else rev,
                                      rev, op.lease)
                if op.lease:
                    self.leases[op.lease].keys.add(op.key)
                events.append(Event("put", op.key, op.value, rev))
            else:
                if op.prefix:
                    gone = [k for k in self.kvs if k.startswith(op.key)]
                else:
                    gone = [op.key] if op.key in self.kvs else []
                for k in sorted(gone):
                    self._detach(self.kvs.pop(k))
                    events.append(Event("delete", k, None, rev))
        if events:
            self.revision = rev
            self.history.extend(events)
            self._dispatch(events)
        return self.revision

    def _detach(self, kv: KV | None) -> None:
        if kv is not None and kv.lease in self.leases:
            self.leases[kv.lease].keys.discard(kv.key)

    def compact(self, revision: int) -> None:
        """Forget history older than `revision` (watches from before it get Compacted)."""
        if revision > self.revision:
            raise StoreError(f"cannot compact to future revision {revision} "
                             f"(current {self.revision})")
        if revision <= self.compact_revision:
            raise StoreError(f"revision {revision} already compacted "
                             f"(at {self.compact_revision})")
        self.compact_revision = revision
        self.history = [e for e in self.history if e.mod_revision >= revision]

    # --- watchers -------------------------------------------------------------------------

    def add_watcher(self, watcher: _Watcher) -> None:
        self._watchers.add(watcher)

    def remove_watcher(self, watcher: _Watcher) -> None:
        self._watchers.discard(watcher)

    def break_watchers(self, client: MemoryStore, error: StoreError) -> None:
        for w in [w for w in self._watchers if w.client is client]:
            w.offer(error)
            self._watchers.discard(w)

    def _dispatch(self, events: list[Event]) -> None:
        for w in list(self._watchers):
            if not w.offer(events):
                self._watchers.discard(w)


# Process-wide named states, for open_store("memory://NAME").
_NAMED: dict[str, MemoryState] = {}


def named_state(name: str) -> MemoryState:
    if name not in _NAMED:
        _NAMED[name] = MemoryState(name)
    return _NAMED[name]


def forget_named(name: str | None = None) -> None:
    """Drop one named state (or all): the next open_store of that name starts empty."""
    if name is None:
        _NAMED.clear()
    else:
        _NAMED.pop(name, None)


class MemoryStore(Store):
    """One client of a MemoryState (a fresh private state if none is given)."""

    def __init__(self, state: MemoryState | None = None) -> None:
        self.state = state if state is not None else MemoryState()
        self.endpoint = f"memory://{self.state.name}"
        self._available = True

    @classmethod
    def shared(cls, state: MemoryState) -> MemoryStore:
        """Another client on the same state (a second agent on the same cluster)."""
        return cls(state)

    def set_available(self, available: bool) -> None:
        """Simulate losing (False) or regaining the connection to the store.

        While unavailable every call raises StoreUnavailable; taking the client offline
        also breaks its open watches with StoreUnavailable, like a dropped etcd stream.
        """
        self._available = available
        if not available:
            self.state.break_watchers(self, self._unavailable())

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(f"cannot reach memory store at {self.endpoint}: offline")

    def _ready(self) -> MemoryState:
        if not self._available:
            raise self._unavailable()
        self.state.expire()
        return self.state

    async def connect(self) -> None:
        self._ready()

    async def close(self) -> None:
        self.state.break_watchers(self, StoreUnavailable(f"{self.endpoint}: client closed"))

    async def get(self, key: str) -> KV | None:
        return self._ready().kvs.get(key)

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        st = self._ready()
        return [st.kvs[k] for k in sorted(k for k in st.kvs if k.startswith(prefix))], st.revision

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self._ready().apply([Put(key, value, lease)])

    async def delete(self, key: str, prefix: bool = False) -> int:
        st = self._ready()
        before = len(st.kvs)
        st.apply([Delete(key, prefix)])
        return before - len(st.kvs)

    # (builtins.list: inside the class body, `list` is the list() method)
    async def txn(self, compares: builtins.list[Compare], success: builtins.list[Op],
                  failure: builtins.list[Op] | None = None) -> TxnResult:
        st = self._ready()
        ok = all(st.check(c) for c in compares)
        rev = st.apply(success if ok else (failure or []))
        return TxnResult(ok, rev)

    async def grant(self, ttl: int) -> Lease:
        return self._ready().grant(ttl)

    async def refresh(self, lease: Lease) -> int:
        return self._ready().refresh(lease.id)  # type: ignore[return-value]

    async def revoke(self, lease: Lease) -> None:
        self._ready().revoke(lease.id)  # revoking a lease that is already gone is a no-op

    async def compact(self, revision: int) -> None:
        self._ready().compact(revision)

    async def watch(self, prefix: str,
                    start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        st = self._ready()
        if start_revision <= 0:  # etcd: 0 means "from now on"
            start_revision = st.revision + 1
        if start_revision < st.compact_revision:
            raise Compacted(st.compact_revision)
        watcher = _Watcher(prefix, self)
        # No await between reading the backlog and registering: no event can fall between.
        backlog: dict[int, list[Event]] = {}
        for e in st.history:
            if e.mod_revision >= start_revision and e.key.startswith(prefix):
                backlog.setdefault(e.mod_revision, []).append(e)
        st.add_watcher(watcher)
        try:
            for batch in backlog.values():  # one batch per revision, as live events come
                yield batch
            while True:
                deadline = st.next_deadline()
                sleep = _MAX_WATCH_SLEEP if deadline is None else \
                    min(_MAX_WATCH_SLEEP, max(0.0, deadline - time.monotonic()) + 0.001)
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), sleep)
                except asyncio.TimeoutError:
                    st.expire()  # emits due delete events into our own queue, among others
                    continue
                if isinstance(item, StoreError):
                    raise item
                yield item
        finally:
            st.remove_watcher(watcher)
