"""The store contract, checked on MemoryStore (and on etcd by tests/integration).

Tests listed in CONTRACT take a `backend` fixture and hold for every backend:
tests/integration/test_store_etcd.py runs them again with `backend` parametrised over
memory and a real etcd. A backend gives connected clients of one cluster (`client()`),
can cut one client off the store and heal it (a dropped connection), and compacts.
The tests after CONTRACT are about MemoryStore alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import AsyncIterator, Awaitable, Callable

import pytest

from overnet.store import (KV, Absent, Compacted, Compare, Delete, Event, KeepAlive, Lease,
                           LeaseLost, MemoryState, MemoryStore, Mirror, ModRevision, Op, Put,
                           Store, StoreError, StoreUnavailable, TxnResult, ValueIs,
                           forget_named, open_store)
from overnet.store.mirror import Item, diff

_test_ids = itertools.count()


class MemoryBackend:
    name = "memory"
    lease_ttl = 1  # the shortest lease the backend honours, in seconds

    def __init__(self) -> None:
        self.state = MemoryState("contract")
        self.prefix = f"/t{next(_test_ids)}/"
        self._clients: list[MemoryStore] = []

    async def client(self) -> MemoryStore:
        store = MemoryStore(self.state)
        await store.connect()
        self._clients.append(store)
        return store

    async def cut(self, store: Store) -> None:
        assert isinstance(store, MemoryStore)
        store.set_available(False)

    async def heal(self, store: Store) -> None:
        assert isinstance(store, MemoryStore)
        store.set_available(True)

    async def compact(self, revision: int) -> None:
        self.state.compact(revision)

    async def close(self) -> None:
        for c in self._clients:
            await c.close()


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    b = MemoryBackend()
    yield b
    await b.close()


# --- helpers --------------------------------------------------------------------------------

async def collect(watch: AsyncIterator[list[Event]], count: int,
                  timeout: float = 10.0) -> list[Event]:
    """The next `count` events of a watch, flattened (backends may batch differently)."""
    events: list[Event] = []

    async def run() -> None:
        async for batch in watch:
            events.extend(batch)
            if len(events) >= count:
                return
    await asyncio.wait_for(run(), timeout)
    return events


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


def summary(events: list[Event]) -> list[tuple[str, str, bytes | None]]:
    return [(e.type, e.key, e.value) for e in events]


async def rev_of(store: Store) -> int:
    return (await store.list("/no-such-prefix/"))[1]


class ListHook(Store):
    """Delegates to `inner`, running `hook` once, just after the first list() read."""

    def __init__(self, inner: Store, hook: Callable[[], Awaitable[None]]) -> None:
        self.inner, self.hook, self.endpoint = inner, hook, inner.endpoint

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        result = await self.inner.list(prefix)
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        return result

    async def connect(self) -> None: await self.inner.connect()
    async def close(self) -> None: await self.inner.close()
    async def get(self, key: str) -> KV | None: return await self.inner.get(key)
    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return await self.inner.put(key, value, lease)
    async def delete(self, key: str, prefix: bool = False) -> int:
        return await self.inner.delete(key, prefix)
    async def txn(self, compares: list[Compare], success: list[Op],
                  failure: list[Op] | None = None) -> TxnResult:
        return await self.inner.txn(compares, success, failure)
    async def grant(self, ttl: int) -> Lease: return await self.inner.grant(ttl)
    async def refresh(self, lease: Lease) -> int: return await self.inner.refresh(lease)
    async def revoke(self, lease: Lease) -> None: await self.inner.revoke(lease)
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        return self.inner.watch(prefix, start_revision)


# --- the contract ---------------------------------------------------------------------------

async def test_put_get_list_revisions(backend) -> None:
    s = await backend.client()
    p = backend.prefix
    r0 = await rev_of(s)
    assert await s.get(p + "a") is None
    r1 = await s.put(p + "a", b"1")
    assert r1 == r0 + 1
    kv = await s.get(p + "a")
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.lease) == (b"1", r1, r1, 0)
    r2 = await s.put(p + "a", b"2")
    kv = await s.get(p + "a")
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"2", r1, r2)
    await s.put(p + "c", b"3")
    r4 = await s.put(p + "b", b"4")
    await s.put(p[:-1] + "x", b"outside")  # shares the prefix's characters but not "/"
    kvs, rev = await s.list(p)
    assert [k.key for k in kvs] == [p + "a", p + "b", p + "c"]
    assert rev == r4 + 1


async def test_delete_and_prefix_delete(backend) -> None:
    s = await backend.client()
    p = backend.prefix
    for k in ("a/1", "a/2", "ab", "b"):
        await s.put(p + k, b"v")
    rev = await rev_of(s)
    assert await s.delete(p + "missing") == 0
    assert await rev_of(s) == rev, "deleting nothing must not bump the revision"
    assert await s.delete(p + "a/", prefix=True) == 2
    assert await rev_of(s) == rev + 1, "a prefix delete is one revision"
    assert [k.key for k in (await s.list(p))[0]] == [p + "ab", p + "b"]
    assert await s.delete(p + "b") == 1
    assert await s.get(p + "b") is None


async def test_txn_compares_and_branches(backend) -> None:
    s = await backend.client()
    p = backend.prefix
    k = p + "k"
    res = await s.txn([Absent(k)], [Put(k, b"1")], [Put(p + "failed", b"x")])
    assert res.succeeded and res.revision == (await s.get(k)).mod_revision
    created = res.revision

    res = await s.txn([Absent(k)], [Put(k, b"2")])
    assert not res.succeeded and res.revision == created, "no-op failure keeps the revision"
    assert (await s.get(k)).value == b"1"

    assert not (await s.txn([ModRevision(k, created - 1)], [Put(k, b"x")])).succeeded
    assert not (await s.txn([ModRevision(p + "nope", created)], [Put(k, b"x")])).succeeded
    assert (await s.txn([ModRevision(p + "nope", 0)], [])).succeeded, "0 means absent"
    res = await s.txn([ModRevision(k, created), ValueIs(k, b"1")], [Put(k, b"2")])
    assert res.succeeded and (await s.get(k)).mod_revision == res.revision

    assert not (await s.txn([ValueIs(k, b"1")], [])).succeeded
    assert not (await s.txn([ValueIs(p + "nope", b"")], [])).succeeded, \
        "a value compare on an absent key is false, even against b''"

    # failure branch runs, several ops land in one revision
    await s.put(p + "d/1", b"x")
    await s.put(p + "d/2", b"x")
    res = await s.txn([ValueIs(k, b"other")], [Put(p + "wrong", b"x")],
                      [Put(p + "f1", b"a"), Put(p + "f2", b"b"), Delete(p + "d/", prefix=True)])
    assert not res.succeeded
    kvs, _ = await s.list(p)
    assert {kv.key: kv.mod_revision for kv in kvs if kv.key in (p + "f1", p + "f2")} == \
        {p + "f1": res.revision, p + "f2": res.revision}
    assert await s.get(p + "d/1") is None and await s.get(p + "wrong") is None


async def test_create_if_absent_race_between_clients(backend) -> None:
    a, b = await backend.client(), await backend.client()
    key = backend.prefix + "claim"
    results = await asyncio.gather(*(c.create(key, name.encode())
                                     for i in range(5) for c, name in ((a, f"a{i}"), (b, f"b{i}"))))
    assert results.count(True) == 1
    winner = ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"][results.index(True)]
    assert (await a.get(key)).value == winner.encode()


async def test_compare_and_swap_counter_between_clients(backend) -> None:
    key = backend.prefix + "counter"
    clients = [await backend.client(), await backend.client()]
    await clients[0].put(key, b"0")

    async def bump(s: Store, times: int) -> int:
        retries = 0
        for _ in range(times):
            while True:
                kv = await s.get(key)
                new = str(int(kv.value) + 1).encode()
                if (await s.txn([ModRevision(key, kv.mod_revision)], [Put(key, new)])).succeeded:
                    break
                retries += 1
        return retries
    await asyncio.gather(*(bump(c, 15) for c in clients))
    assert (await clients[1].get(key)).value == b"30"


async def test_lease_expiry_deletes_keys_with_events(backend) -> None:
    s, other = await backend.client(), await backend.client()
    p = backend.prefix
    lease = await s.grant(backend.lease_ttl)
    assert lease.ttl >= backend.lease_ttl
    await s.put(p + "a", b"1", lease=lease.id)
    await s.put(p + "b", b"2", lease=lease.id)
    await s.put(p + "keep", b"3")
    assert (await s.get(p + "a")).lease == lease.id
    start = await rev_of(s) + 1
    began = time.monotonic()
    # nobody calls the store while we wait: expiry alone must produce the events
    async with contextlib.aclosing(other.watch(p, start)) as w:
        events = await collect(w, 2, timeout=lease.ttl + 5)
    took = time.monotonic() - began
    assert sorted(summary(events)) == [("delete", p + "a", None), ("delete", p + "b", None)]
    assert events[0].mod_revision == events[1].mod_revision, "one revision for the lease"
    assert lease.ttl - 0.5 <= took <= lease.ttl + 2
    assert await s.get(p + "a") is None and await s.get(p + "keep") is not None
    with pytest.raises(LeaseLost):
        await s.refresh(lease)
    with pytest.raises(LeaseLost):
        await s.put(p + "c", b"x", lease=lease.id)
    with pytest.raises(LeaseLost):
        await s.txn([], [Put(p + "c", b"x", lease.id)])
    assert await s.get(p + "c") is None


async def test_refresh_and_revoke(backend) -> None:
    s = await backend.client()
    p = backend.prefix
    lease = await s.grant(backend.lease_ttl)
    await s.put(p + "a", b"1", lease=lease.id)
    until = time.monotonic() + lease.ttl * 2
    while time.monotonic() < until:
        assert await s.refresh(lease) > 0
        await asyncio.sleep(lease.ttl / 4)
    assert await s.get(p + "a") is not None, "refreshed lease must keep its key"
    await s.put(p + "a", b"2")  # a put without lease detaches the key from the lease
    await s.put(p + "b", b"1", lease=lease.id)
    await s.revoke(lease)
    assert await s.get(p + "b") is None
    assert (await s.get(p + "a")).value == b"2"
    await s.revoke(lease)  # already gone: no error


async def test_watch_from_revision(backend) -> None:
    s, other = await backend.client(), await backend.client()
    p = backend.prefix
    await s.put(p + "a", b"1")
    rb = await s.put(p + "b", b"2")
    await s.put("/elsewhere" + p, b"x")
    await s.delete(p + "a")
    async with contextlib.aclosing(other.watch(p, rb)) as w:
        events = await collect(w, 2)
        assert summary(events) == [("put", p + "b", b"2"), ("delete", p + "a", None)]
        rd = await s.put(p + "d", b"4")
        live = await collect(w, 1)
        assert summary(live) == [("put", p + "d", b"4")] and live[0].mod_revision == rd


async def test_watch_compacted_revision(backend) -> None:
    s = await backend.client()
    p = backend.prefix
    old = await s.put(p + "a", b"1")
    await s.put(p + "a", b"2")
    now = await s.put(p + "a", b"3")
    await backend.compact(now)
    with pytest.raises(Compacted) as info:
        async with contextlib.aclosing(s.watch(p, old)) as w:
            await collect(w, 1)
    assert info.value.compact_revision == now
    async with contextlib.aclosing(s.watch(p, now)) as w:  # the compact revision itself is kept
        assert summary(await collect(w, 1)) == [("put", p + "a", b"3")]


async def test_mirror_follows_changes(backend) -> None:
    a, b = await backend.client(), await backend.client()
    p = backend.prefix
    await b.put(p + "old", b"0")
    mirror = Mirror(a, p)
    await mirror.start()
    try:
        assert mirror.items == {p + "old": Item(b"0", mirror.items[p + "old"].mod_revision)}
        queue = mirror.subscribe()
        rev = await b.put(p + "new", b"1")
        await mirror.wait_revision(rev, timeout=5)
        assert mirror.items[p + "new"] == Item(b"1", rev)
        await b.delete(p + "old")
        await b.put("/other/key", b"x")
        got = [await asyncio.wait_for(queue.get(), 5) for _ in range(2)]
        assert [summary(batch) for batch in got] == [[("put", p + "new", b"1")],
                                                    [("delete", p + "old", None)]]
        assert set(mirror.items) == {p + "new"}
        await mirror.wait_revision(0)  # already there: returns at once
        with pytest.raises(asyncio.TimeoutError):
            await mirror.wait_revision(mirror.revision + 100, timeout=0.2)
    finally:
        await mirror.stop()


async def _changes_while_away(b: Store, p: str) -> None:
    await b.put(p + "new", b"n")
    await b.put(p + "changed", b"2")
    await b.delete(p + "gone")
    await b.put("/unrelated" + p, b"x")


def _expected_resync(p: str) -> list[tuple[str, str, bytes | None]]:
    return [("put", p + "changed", b"2"), ("delete", p + "gone", None), ("put", p + "new", b"n")]


async def _seed(b: Store, p: str) -> None:
    for k, v in (("same", b"s"), ("changed", b"1"), ("gone", b"g")):
        await b.put(p + k, v)


async def test_mirror_relists_after_compaction(backend, caplog) -> None:
    caplog.set_level(logging.INFO, logger="overnet.store.mirror")
    a, b = await backend.client(), await backend.client()
    p = backend.prefix
    await _seed(b, p)

    async def change_and_compact() -> None:  # runs between the mirror's list and its watch
        await _changes_while_away(b, p)
        await backend.compact(await rev_of(b))

    mirror = Mirror(ListHook(a, change_and_compact), p)
    queue = mirror.subscribe()
    await mirror.start()
    try:
        first = await asyncio.wait_for(queue.get(), 5)
        assert sorted(summary(first)) == [("put", p + "changed", b"1"), ("put", p + "gone", b"g"),
                                          ("put", p + "same", b"s")]
        resync = await asyncio.wait_for(queue.get(), 10)
        assert summary(resync) == _expected_resync(p)
        assert mirror.relists == 1
        assert "compacted" in caplog.text
        kvs, _ = await b.list(p)
        assert mirror.items == {kv.key: Item(kv.value, kv.mod_revision) for kv in kvs}
        rev = await b.put(p + "after", b"a")  # and it keeps following
        assert summary(await asyncio.wait_for(queue.get(), 5)) == [("put", p + "after", b"a")]
        await mirror.wait_revision(rev, timeout=5)
    finally:
        await mirror.stop()


async def _cut_off_mirror(backend, caplog) -> tuple[Mirror, Store, str]:
    """A started mirror of a seeded prefix whose connection is cut, once it noticed; and a
    second client (still connected) for the changes."""
    caplog.set_level(logging.INFO, logger="overnet.store.mirror")
    a, b = await backend.client(), await backend.client()
    p = backend.prefix
    await _seed(b, p)
    mirror = Mirror(a, p)
    await mirror.start()
    try:
        await backend.cut(a)
        await asyncio.sleep(0.3)  # let the mirror notice and start retrying
    except BaseException:
        await mirror.stop()
        raise
    return mirror, b, p


async def test_mirror_relists_when_the_store_is_behind_it(backend, caplog) -> None:
    """A store restored from an older snapshot: its revisions are not the ones the mirror
    saw, and resuming the watch would miss changes. The mirror lists again."""
    mirror, _, _ = await _cut_off_mirror(backend, caplog)
    try:
        mirror.revision += 1000       # as if it had seen revisions the store no longer has
        await backend.heal(mirror.store)
        for _ in range(150):
            if mirror.relists:
                break
            await asyncio.sleep(0.1)
        assert (mirror.relists, mirror.resumes) == (1, 0) and "re-listed" in caplog.text
    finally:
        await mirror.stop()


async def test_mirror_recovers_from_lost_connection(backend, caplog) -> None:
    mirror, b, p = await _cut_off_mirror(backend, caplog)
    try:
        queue = mirror.subscribe()
        await _changes_while_away(b, p)
        await backend.heal(mirror.store)
        # the watch resumes where it broke: the changes come as the events they were
        seen: list = []
        while len(seen) < 3:
            seen += summary(await asyncio.wait_for(queue.get(), 15))
        assert sorted(seen) == sorted(_expected_resync(p))
        assert (mirror.resumes, mirror.relists) == (1, 0) and "unavailable" in caplog.text
        assert "watching again from revision" in caplog.text
        await b.put(p + "after", b"a")
        assert summary(await asyncio.wait_for(queue.get(), 5)) == [("put", p + "after", b"a")]
    finally:
        await mirror.stop()


async def test_keepalive_keeps_lease_alive(backend) -> None:
    s, other = await backend.client(), await backend.client()
    key = backend.prefix + "host"
    called: list[Lease] = []

    async def on_new_lease(lease: Lease) -> None:
        called.append(lease)
        await s.put(key, b"me", lease=lease.id)
    ka = KeepAlive(s, backend.lease_ttl, on_new_lease)
    await ka.start()
    try:
        assert called == [ka.lease], "start() hands the first lease to the owner"
        await asyncio.sleep(max(ka.lease.ttl * 3, 3))
        kv = await other.get(key)
        assert kv is not None and kv.lease == ka.lease.id
        assert called == [ka.lease] and ka.renewals == 0
    finally:
        await ka.stop(revoke=True)
    assert await other.get(key) is None, "stop(revoke=True) revokes the lease"


async def test_keepalive_replaces_lost_lease(backend) -> None:
    s, other = await backend.client(), await backend.client()
    key = backend.prefix + "host"
    called: list[Lease] = []

    async def on_new_lease(lease: Lease) -> None:
        called.append(lease)
        await s.put(key, b"me", lease=lease.id)
    ka = KeepAlive(s, backend.lease_ttl, on_new_lease)
    await ka.start()
    try:
        first = ka.lease
        await other.revoke(first)  # as if it had expired
        assert await other.get(key) is None

        async def back() -> bool:
            kv = await other.get(key)
            return kv is not None and kv.lease == ka.lease.id != first.id
        await eventually(back, timeout=first.ttl + 3, what="key re-put under a new lease")
        assert called == [first, ka.lease] and ka.renewals == 1
    finally:
        await ka.stop(revoke=False)
    assert await other.get(key) is not None, "stop(revoke=False) leaves the lease"
    await other.revoke(ka.lease)


async def test_keepalive_after_outage_longer_than_ttl(backend, caplog) -> None:
    caplog.set_level(logging.INFO, logger="overnet.store.keepalive")
    s, other = await backend.client(), await backend.client()
    key = backend.prefix + "host"
    called: list[Lease] = []

    async def on_new_lease(lease: Lease) -> None:
        called.append(lease)
        await s.put(key, b"me", lease=lease.id)
    ka = KeepAlive(s, backend.lease_ttl, on_new_lease)
    await ka.start()
    try:
        first = ka.lease
        await backend.cut(s)
        await eventually(lambda: _is_none(other.get(key)), timeout=first.ttl + 5,
                         what="old lease expiring during the outage")
        await asyncio.sleep(1.5)
        await backend.heal(s)

        async def back() -> bool:
            kv = await other.get(key)
            return kv is not None and kv.lease == ka.lease.id != first.id
        await eventually(back, timeout=10, what="key re-put under a new lease")
        assert called == [first, ka.lease]
        assert caplog.text.count("cannot keep lease") == 1, "one warning per outage"
    finally:
        await backend.heal(s)
        await ka.stop()


async def _is_none(aw: Awaitable[object]) -> bool:
    return await aw is None


CONTRACT = [
    test_put_get_list_revisions, test_delete_and_prefix_delete, test_txn_compares_and_branches,
    test_create_if_absent_race_between_clients, test_compare_and_swap_counter_between_clients,
    test_lease_expiry_deletes_keys_with_events, test_refresh_and_revoke,
    test_watch_from_revision, test_watch_compacted_revision, test_mirror_follows_changes,
    test_mirror_relists_after_compaction, test_mirror_recovers_from_lost_connection,
    test_keepalive_keeps_lease_alive, test_keepalive_replaces_lost_lease,
    test_keepalive_after_outage_longer_than_ttl,
]


# --- MemoryStore only -----------------------------------------------------------------------

async def test_fresh_store_starts_at_revision_one() -> None:
    s = MemoryStore()
    assert await s.list("/") == ([], 1)
    assert await s.put("/a", b"") == 2


async def test_compact_rejects_future_and_old_revisions() -> None:
    s = MemoryStore()
    await s.put("/a", b"1")
    with pytest.raises(StoreError, match="future"):
        await s.compact(99)
    await s.compact(2)
    with pytest.raises(StoreError, match="already compacted"):
        await s.compact(2)


async def test_txn_rejects_duplicate_puts_and_changes_nothing() -> None:
    s = MemoryStore()
    with pytest.raises(StoreError, match="duplicate"):
        await s.txn([], [Put("/a", b"1"), Put("/a", b"2")])
    assert await s.list("/") == ([], 1)


async def test_float_ttl_for_fast_tests() -> None:
    s = MemoryStore()
    lease = await s.grant(0.2)  # type: ignore[arg-type]
    await s.put("/a", b"1", lease=lease.id)
    await asyncio.sleep(0.3)
    assert await s.get("/a") is None


async def test_offline_client_raises_unavailable_naming_endpoint() -> None:
    state = MemoryState("lab")
    a, b = MemoryStore(state), MemoryStore.shared(state)
    a.set_available(False)
    with pytest.raises(StoreUnavailable, match="memory://lab"):
        await a.get("/x")
    with pytest.raises(StoreUnavailable):
        async with contextlib.aclosing(a.watch("/", 0)) as w:
            await collect(w, 1)
    await b.put("/x", b"1")  # the other client is unaffected
    a.set_available(True)
    assert (await a.get("/x")).value == b"1"


async def test_offline_breaks_open_watch() -> None:
    a = MemoryStore()
    async with contextlib.aclosing(a.watch("/", 0)) as w:
        task = asyncio.create_task(collect(w, 1))
        await asyncio.sleep(0.05)
        a.set_available(False)
        with pytest.raises(StoreUnavailable):
            await task


async def test_watch_from_zero_means_from_now() -> None:
    s = MemoryStore()
    await s.put("/a", b"old")
    async with contextlib.aclosing(s.watch("/", 0)) as w:
        task = asyncio.create_task(collect(w, 1))
        await asyncio.sleep(0.05)
        await s.put("/a", b"new")
        assert summary(await task) == [("put", "/a", b"new")]


async def test_open_store_named_memory_is_shared() -> None:
    forget_named("unit-shared")
    a, b = open_store("memory://unit-shared"), open_store("memory://unit-shared")
    assert a is not b and a.endpoint == "memory://unit-shared"
    await a.put("/k", b"v")
    assert (await b.get("/k")).value == b"v"
    forget_named("unit-shared")
    assert await open_store("memory://unit-shared").get("/k") is None


@pytest.mark.parametrize("url", ["", "memory://", "etcd://", "etcd://nohost", "etcd://h:x",
                                 "http://127.0.0.1:2379", "127.0.0.1:2379", "memory://a/b"])
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError) as info:
        open_store(url)
    assert repr(url) in str(info.value) and "etcd://HOST:PORT" in str(info.value)
    assert "memory://NAME" in str(info.value)


def test_open_store_etcd_endpoints() -> None:
    store = open_store("etcd://127.0.0.1:2379,10.0.0.2:2379")
    assert store.endpoints == ["127.0.0.1:2379", "10.0.0.2:2379"]  # type: ignore[attr-defined]


def test_diff_synthesizes_minimal_events() -> None:
    old = {"a": Item(b"1", 5), "b": Item(b"2", 6), "c": Item(b"3", 7)}
    new = {"a": Item(b"1", 5), "b": Item(b"9", 12), "d": Item(b"4", 11)}
    assert diff(old, new, 20) == [Event("put", "b", b"9", 12), Event("delete", "c", None, 20),
                                  Event("put", "d", b"4", 11)]
    assert diff(new, new, 20) == []


async def test_mirror_start_fails_when_unreachable() -> None:
    s = MemoryStore()
    s.set_available(False)
    with pytest.raises(StoreUnavailable):
        await Mirror(s, "/").start()


async def test_mirror_survives_unexpected_errors(caplog) -> None:
    s = MemoryStore()
    mirror = Mirror(ListHook(s, _boom), "/", min_backoff=0.01)
    with pytest.raises(RuntimeError):
        await mirror.start()  # first list raises through start()

    broken = {"n": 2}

    class Flaky(ListHook):
        def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
            if broken["n"]:
                broken["n"] -= 1
                raise RuntimeError("surprise")
            return super().watch(prefix, start_revision)

    mirror = Mirror(Flaky(s, _noop), "/", min_backoff=0.01)
    await mirror.start()
    try:
        rev = await s.put("/k", b"v")
        await mirror.wait_revision(rev, timeout=5)
        assert "surprise" in caplog.text and broken["n"] == 0
    finally:
        await mirror.stop()


async def _boom() -> None:
    raise RuntimeError("boom")


async def _noop() -> None:
    pass


async def test_keepalive_survives_failing_callback(caplog) -> None:
    s = MemoryStore()
    calls: list[int] = []

    async def flaky(lease: Lease) -> None:
        calls.append(lease.id)
        if len(calls) == 2:
            raise RuntimeError("owner hiccup")
        await s.put("/host", b"me", lease=lease.id)
    ka = KeepAlive(s, 1, flaky, retry_interval=0.1)
    await ka.start()
    try:
        await s.revoke(ka.lease)
        assert await s.get("/host") is None
        await eventually(lambda: _is_not_none(s.get("/host")), timeout=5)
        assert len(calls) == 3 and calls[1] == calls[2], "retried with the same new lease"
        assert "owner hiccup" in caplog.text
    finally:
        await ka.stop()


async def _is_not_none(aw: Awaitable[object]) -> bool:
    return await aw is not None


async def test_keepalive_start_fails_when_unreachable() -> None:
    s = MemoryStore()
    s.set_available(False)
    with pytest.raises(StoreUnavailable):
        await KeepAlive(s, 5, _noop_lease).start()


def test_keepalive_lease_before_start() -> None:
    ka = KeepAlive(MemoryStore(), 5, _noop_lease)
    with pytest.raises(RuntimeError):
        _ = ka.lease


async def _noop_lease(lease: Lease) -> None:
    pass


async def test_empty_prefix_means_every_key() -> None:
    s = MemoryStore()
    await s.put("/a", b"1")
    await s.put("b", b"2")
    assert [kv.key for kv in (await s.list(""))[0]] == ["/a", "b"]
    assert await s.delete("", prefix=True) == 2


async def test_mirror_generation_changes_only_with_its_prefix() -> None:
    """Readers cache what they derive from a prefix on its generation: it must change with
    every change under the prefix (puts, deletes, a re-list's differences) and only then."""
    s = MemoryStore(MemoryState("generation"))
    await s.put("/r/hosts/h1", b"1")
    mirror = Mirror(s, "/r/")
    await mirror.start()
    try:
        hosts, net_a, net_b = "/r/hosts/", "/r/eps/a/", "/r/eps/b/"
        before = {p: mirror.generation(p) for p in (hosts, net_a, net_b, "/r/eps/")}
        assert before[hosts] != 0
        await mirror.wait_revision(await s.put("/r/eps/a/10.0.0.2", b"x"), timeout=5)
        after = {p: mirror.generation(p) for p in before}
        assert after[hosts] == before[hosts] and after[net_b] == before[net_b]
        assert after[net_a] != before[net_a] and after["/r/eps/"] != before["/r/eps/"]
        rev = await s.put("/r/other", b"y")   # no sub-prefix: changes only the whole copy's
        await mirror.wait_revision(rev, timeout=5)
        whole = mirror.generation("/r/")
        assert mirror.generation(net_a) == after[net_a]
        await s.delete("/r/hosts/h1")
        await mirror.wait_revision(await s.put("/r/other", b"z"), timeout=5)
        assert mirror.generation(hosts) != after[hosts]
        assert mirror.generation("/r/") != whole   # any other prefix: every change
        assert mirror.generation("/r/eps/a/10.0.0.2/") == mirror.generation("/r/")
    finally:
        await mirror.stop()


async def test_mirror_index_of_two_segment_prefixes_matches_its_copy() -> None:
    """keys_in(prefix) answers from an index kept as changes arrive: after puts, deletes and
    a re-list it holds exactly the keys a scan of the copy finds."""
    state = MemoryState("index")
    s = MemoryStore(state)
    await s.put("/r/eps/a/1", b"1")
    await s.put("/r/eps/b/1", b"1")
    mirror = Mirror(s, "/r/")
    await mirror.start()

    def scan(prefix: str) -> set[str]:
        return {k for k in mirror.items if k.startswith(prefix)}
    try:
        await s.put("/r/eps/a/2", b"2")
        await s.put("/r/eps/a/3/deeper", b"3")
        await s.delete("/r/eps/b/1")
        await mirror.wait_revision(await s.put("/r/eps/c/1", b"1"), timeout=5)
        for p in ("/r/eps/a/", "/r/eps/b/", "/r/eps/c/", "/r/eps/none/"):
            assert set(mirror.keys_in(p)) == scan(p)
        assert mirror.keys_in("/r/eps/") is None and mirror.keys_in("/r/eps/a/2") is None
    finally:
        await mirror.stop()
    await s.delete("/r/eps/a/1")          # while the watch is down
    await s.put("/r/eps/d/1", b"1")
    await mirror._relist()                # what a reconnect does: the differences re-index
    assert set(mirror.keys_in("/r/eps/a/")) == scan("/r/eps/a/") == {
        "/r/eps/a/2", "/r/eps/a/3/deeper"}
    assert mirror.keys_in("/r/eps/d/") == ["/r/eps/d/1"]
