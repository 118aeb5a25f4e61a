"""A three-member etcd cluster loses the member a client uses: the client moves on.

Every test starts its own cluster (real etcd processes on free ports of 127.0.0.1, one temp
dir each, stopped by PID afterwards), connects an EtcdStore to all three members, then kills
(SIGKILL) or freezes (SIGSTOP) the member that store is using, while calls are in flight.
The member stays down while the checks run: the two survivors are a quorum.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from overnet.store import Absent, EtcdStore, KeepAlive, Lease, Mirror, Put, StoreError
from tests.integration.etcd_helper import EtcdCluster, TcpProxy

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None and not os.path.exists(
    "/usr/bin/etcd"), reason="etcd is not installed")


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as c:
        try:
            yield c
        finally:
            for m in c.members:  # a frozen member must run again to be stopped cleanly
                if m.pid is not None:
                    os.kill(m.pid, signal.SIGCONT)


@pytest.fixture
async def store(cluster: EtcdCluster) -> AsyncIterator[EtcdStore]:
    s = EtcdStore(cluster.endpoints)
    await s.connect()
    try:
        yield s
    finally:
        await s.close()


class CallStream:
    """Calls in a loop, as an agent makes them: a create-if-absent txn, a put, a get."""

    def __init__(self, store: EtcdStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.done = 0
        self.failed: list[str] = []
        self.slowest = 0.0  # for the report printed on failure, never asserted
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self._one(self.done)
            except (StoreError, AssertionError) as e:
                self.failed.append(f"call {self.done}: {e}")
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.done += 1

    async def _one(self, n: int) -> None:
        key, value = f"{self.prefix}claim/{n}", f"v{n}".encode()
        result = await self.store.txn([Absent(key)], [Put(key, value)])
        assert result.succeeded, f"create-if-absent of {key} reported a conflict"
        await self.store.put(f"{self.prefix}put/{n}", value)
        kv = await self.store.get(key)
        assert kv is not None and kv.value == value, f"{key} reads back {kv}"


def used_member(cluster: EtcdCluster, store: EtcdStore) -> int:
    return cluster.member_of(store.endpoint)


async def calls_after(stream: CallStream, count: int) -> None:
    """Let the stream make `count` more calls (it runs while we wait)."""
    target = stream.done + count
    deadline = time.monotonic() + 60
    while stream.done < target and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert stream.done >= target, f"the call stream is stuck at {stream.done}"


@pytest.mark.parametrize("which", ["used", "leader"])
async def test_calls_go_on_when_a_member_is_killed(
        cluster: EtcdCluster, store: EtcdStore, which: str) -> None:
    """The member the store uses (it must move), or the leader (if that is another member,
    the store's member survives but has no leader until the survivors elect one)."""
    victim = used_member(cluster, store) if which == "used" else cluster.leader()
    stream = CallStream(store, f"/kill-{uuid.uuid4().hex[:6]}/")
    stream.start()
    try:
        await calls_after(stream, 20)
        await asyncio.to_thread(cluster.kill, victim)  # while a call is in flight
        await calls_after(stream, 100)
    finally:
        await stream.stop()
    assert stream.failed == [], f"{len(stream.failed)} failed calls: {stream.failed[:5]}"
    assert store.endpoint != cluster.endpoints[victim]
    kvs, _ = await store.list(stream.prefix + "claim/")
    assert len(kvs) >= stream.done - 1  # (the call cancelled by stop() may be missing)
    print(f"\n{stream.done} calls, none failed; slowest {stream.slowest:.2f}s")


async def test_calls_move_on_when_their_member_hangs(
        cluster: EtcdCluster, store: EtcdStore) -> None:
    victim = used_member(cluster, store)
    stream = CallStream(store, f"/hang-{uuid.uuid4().hex[:6]}/")
    stream.start()
    try:
        await calls_after(stream, 20)
        os.kill(cluster.members[victim].pid, signal.SIGSTOP)  # alive, connected, silent
        await calls_after(stream, 100)
    finally:
        await stream.stop()
    assert stream.failed == [], f"{len(stream.failed)} failed calls: {stream.failed[:5]}"
    assert store.endpoint != cluster.endpoints[victim]
    print(f"\n{stream.done} calls, none failed; slowest {stream.slowest:.2f}s")


async def test_mirror_follows_writes_made_after_its_member_died(
        cluster: EtcdCluster, store: EtcdStore) -> None:
    prefix = f"/mirror-{uuid.uuid4().hex[:6]}/"
    writer = EtcdStore([e for e in cluster.endpoints if e != store.endpoint])
    await writer.connect()
    try:
        await writer.put(prefix + "before", b"1")
        await writer.put(prefix + "gone", b"2")
        mirror = Mirror(store, prefix)
        await mirror.start()
        copy = {k: i.value for k, i in mirror.items.items()}
        queue = mirror.subscribe()
        try:
            await asyncio.to_thread(cluster.kill, used_member(cluster, store))
            await writer.put(prefix + "after", b"3")
            await writer.delete(prefix + "gone")
            last = await writer.put(prefix + "before", b"1b")
            await mirror.wait_revision(last, timeout=30)
            while not queue.empty():  # what a consumer applying every event ends up with
                for e in queue.get_nowait():
                    if e.type == "put":
                        copy[e.key] = e.value
                    else:
                        copy.pop(e.key, None)
            kvs, _ = await writer.list(prefix)
            want = {kv.key: kv.value for kv in kvs}
            assert want == {prefix + "before": b"1b", prefix + "after": b"3"}
            assert {k: i.value for k, i in mirror.items.items()} == want
            assert copy == want
            assert mirror.resumes >= 1  # it watched again on the new member, no list
            assert store.endpoint != writer.endpoint or store.failovers >= 1
        finally:
            await mirror.stop()
    finally:
        await writer.close()


async def test_keepalive_lease_survives_the_death_of_its_member(
        cluster: EtcdCluster, store: EtcdStore) -> None:
    key = f"/lease-{uuid.uuid4().hex[:6]}/alive"
    leases: list[Lease] = []

    async def on_new_lease(lease: Lease) -> None:
        leases.append(lease)
        await store.put(key, b"yes", lease=lease.id)

    keepalive = KeepAlive(store, 3, on_new_lease, retry_interval=0.5)
    await keepalive.start()
    other = EtcdStore([e for e in cluster.endpoints if e != store.endpoint])
    try:
        await asyncio.to_thread(cluster.kill, used_member(cluster, store))
        await asyncio.sleep(3 * 3)  # three TTLs: an unrefreshed lease would be gone
        kv = await other.get(key)
        assert kv is not None and kv.lease == leases[0].id
        assert len(leases) == 1 and keepalive.renewals == 0
        assert await other.refresh(leases[0]) > 0
    finally:
        await keepalive.stop()
        await other.close()


async def test_txn_whose_answer_was_lost_reports_it_was_applied(cluster: EtcdCluster) -> None:
    """etcd applies a create-if-absent, its answer never comes back, the store retries on
    another member: the retry's compare fails, yet the txn was ours and succeeded."""
    proxies = [await TcpProxy(m.client_port).start() for m in cluster.members]
    store = EtcdStore([p.endpoint for p in proxies], call_timeout=1.0)
    try:
        await store.connect()
        key = f"/lost-{uuid.uuid4().hex[:6]}/claim"
        used = next(p for p in proxies if p.endpoint == store.endpoint)
        used.mute()
        result = await store.txn([Absent(key)], [Put(key, b"mine")])
        assert result.succeeded and store.failovers == 1
        assert (await store.get(key)).mod_revision == result.revision
        taken = await store.txn([Absent(key)], [Put(key, b"someone else")])
        assert not taken.succeeded  # a real conflict is still one
    finally:
        await store.close()
        for p in proxies:
            await p.close()


async def test_an_agent_like_client_leaves_a_hung_member(
        cluster: EtcdCluster, store: EtcdStore) -> None:
    """A store used as an agent uses it: a KeepAlive (TTL 10 s, refreshed every 3.3 s) and a
    Mirror, nothing else. Its member freezes: the refresh that hangs makes the store move,
    the Mirror re-lists on the new member and sees later writes, the lease lives on."""
    prefix = f"/agent-{uuid.uuid4().hex[:6]}/"
    leases: list[Lease] = []

    async def on_new_lease(lease: Lease) -> None:
        leases.append(lease)
        await store.put(prefix + "host", b"alive", lease=lease.id)

    keepalive = KeepAlive(store, 10, on_new_lease)
    await keepalive.start()
    mirror = Mirror(store, prefix)
    await mirror.start()
    writer = EtcdStore([e for e in cluster.endpoints if e != store.endpoint])
    frozen = used_member(cluster, store)
    try:
        os.kill(cluster.members[frozen].pid, signal.SIGSTOP)
        last = await writer.put(prefix + "later", b"1")
        await mirror.wait_revision(last, timeout=30)
        assert mirror.items[prefix + "later"].value == b"1"
        assert store.endpoint != cluster.endpoints[frozen] and mirror.resumes >= 1
        await asyncio.sleep(10)  # one more TTL
        kv = await writer.get(prefix + "host")
        assert kv is not None and kv.lease == leases[0].id and keepalive.renewals == 0
    finally:
        await mirror.stop()
        await keepalive.stop()
        await writer.close()
