"""The store contract on a real etcd, plus what only a real etcd shows: failing fast when
nothing listens, several endpoints, watches across an etcd restart, a dropped connection.

The contract tests come from tests/unit/test_store_memory.py and run here with `backend`
parametrised over memory and etcd. Each etcd here is a throw-away process on free ports
with its own temp dir, stopped by PID whatever happens (see etcd_helper).
"""

from __future__ import annotations

import asyncio
import signal
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator

import aetcd
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so the shared contract imports however pytest loaded us
    sys.path.insert(0, str(ROOT))

from overnet.store import (EtcdStore, Mirror, Put, Store, StoreUnavailable,  # noqa: E402
                           open_store)
from tests.integration.etcd_helper import EtcdProcess, TcpProxy, free_port  # noqa: E402
from tests.unit import test_store_memory as contract  # noqa: E402
from tests.unit.test_store_memory import MemoryBackend, collect, summary  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None and not os.path.exists(
    "/usr/bin/etcd"), reason="etcd is not installed")

for _test in contract.CONTRACT:  # collected here too, with this module's `backend`
    globals()[_test.__name__] = _test


class EtcdBackend:
    """Clients of one etcd, each through its own TcpProxy so a test can cut it off."""
    name = "etcd"
    lease_ttl = 2  # etcd raises shorter TTLs to 2 s (1.5 x its election timeout, rounded up)

    def __init__(self, etcd: EtcdProcess) -> None:
        self.etcd = etcd
        self.prefix = f"/t-{uuid.uuid4().hex[:8]}/"  # one etcd serves the whole module
        self._proxies: dict[int, TcpProxy] = {}
        self._clients: list[EtcdStore] = []

    async def client(self) -> EtcdStore:
        proxy = await TcpProxy(self.etcd.client_port).start()
        store = EtcdStore(proxy.endpoint)
        self._proxies[id(store)] = proxy
        self._clients.append(store)
        await store.connect()
        return store

    async def cut(self, store: Store) -> None:
        await self._proxies[id(store)].cut()

    async def heal(self, store: Store) -> None:
        await self._proxies[id(store)].heal()

    async def compact(self, revision: int) -> None:
        async with aetcd.Client("127.0.0.1", self.etcd.client_port, timeout=5) as client:
            await client.compact(revision)

    async def close(self) -> None:
        for store in self._clients:
            await store.close()
        for proxy in self._proxies.values():
            await proxy.close()


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdProcess]:
    with EtcdProcess() as etcd:
        yield etcd


@pytest.fixture
def own_etcd() -> Iterator[EtcdProcess]:
    """An etcd for this test alone (for tests that stop or restart it)."""
    with EtcdProcess() as etcd:
        yield etcd


@pytest.fixture(params=["memory", "etcd"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    b = MemoryBackend() if request.param == "memory" else \
        EtcdBackend(request.getfixturevalue("etcd_server"))
    try:
        yield b
    finally:
        await b.close()


# --- etcd only ------------------------------------------------------------------------------

async def test_connect_fails_fast_when_nothing_listens() -> None:
    port = free_port()
    store = EtcdStore(f"127.0.0.1:{port}")
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await store.connect()
    assert time.monotonic() - began < 5
    assert str(info.value).startswith(f"cannot reach etcd at 127.0.0.1:{port}: ")
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        await store.get("/x")  # later calls try to connect again, and fail the same way


async def test_connect_times_out_on_a_silent_listener() -> None:
    # accepts TCP connections (the kernel's backlog) but never speaks: only a deadline helps
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        store = EtcdStore(f"127.0.0.1:{port}", connect_timeout=2)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"cannot reach etcd at 127.0.0.1:{port}: "):
            await store.connect()
        assert time.monotonic() - began < 5


async def test_open_store_uses_first_endpoint_that_answers(etcd_server: EtcdProcess) -> None:
    dead = f"127.0.0.1:{free_port()}"
    store = open_store(f"etcd://{dead},{etcd_server.endpoint}")
    await store.connect()
    try:
        assert store.endpoint == etcd_server.endpoint
        rev = await store.put("/multi/k", b"v")
        assert (await store.get("/multi/k")).mod_revision == rev
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable) as info:
        await open_store(f"etcd://{dead},127.0.0.1:{free_port()}").connect()
    assert dead in str(info.value)


async def test_empty_prefix_means_every_key(etcd_server: EtcdProcess) -> None:
    store = EtcdStore(etcd_server.endpoint)
    try:
        rev = await store.put("/everything/k", b"v")
        kvs, _ = await store.list("")
        assert "/everything/k" in [kv.key for kv in kvs]
        async with contextlib.aclosing(store.watch("", rev)) as watch:
            assert ("put", "/everything/k", b"v") in summary(await collect(watch, 1))
    finally:
        await store.close()


async def test_a_mirror_lists_a_prefix_bigger_than_grpcs_default_message(
        etcd_server: EtcdProcess) -> None:
    """100,000 endpoint records are ~40 MB: one list answer past gRPC's 4 MB default."""
    store = EtcdStore(etcd_server.endpoint)
    prefix = f"/big-{uuid.uuid4().hex[:8]}/"
    try:
        value = b"v" * 500
        for lo in range(0, 12_000, 100):
            await store.txn([], [Put(f"{prefix}{i:06d}", value) for i in range(lo, lo + 100)])
        mirror = Mirror(store, prefix)
        await mirror.start()
        await mirror.stop()
        assert len(mirror.items) == 12_000
        await store.delete(prefix, prefix=True)
    finally:
        await store.close()


async def test_calls_and_watches_fail_with_store_unavailable_when_etcd_stops(
        own_etcd: EtcdProcess) -> None:
    store = EtcdStore(own_etcd.endpoint)
    await store.connect()
    try:
        lease = await store.grant(5)
        async with contextlib.aclosing(store.watch("/", 0)) as watch:
            pending = asyncio.create_task(collect(watch, 1, timeout=30))
            await asyncio.sleep(0.2)
            own_etcd.stop(keep_data=True)
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match=own_etcd.endpoint):
                await pending
            assert time.monotonic() - began < 5
        for call in (lambda: store.get("/k"), lambda: store.list("/"),
                     lambda: store.put("/k", b"v"), lambda: store.delete("/k"),
                     lambda: store.txn([], []), lambda: store.grant(5),
                     lambda: store.refresh(lease)):
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match=f"cannot reach etcd at {own_etcd.endpoint}"):
                await call()
            assert time.monotonic() - began < 6
        own_etcd.start()
        # the same client reconnects by itself
        await contract.eventually(lambda: _answers(store), timeout=10, what="etcd back")
    finally:
        await store.close()


async def test_a_store_of_one_member_keeps_its_connection_through_a_hang(
        own_etcd: EtcdProcess) -> None:
    """etcd stops answering for longer than a call may wait (a storm of starts on a busy
    machine): the call fails, but the store keeps its one connection and its watch, and both
    go on once etcd answers again: no new connection for every call and watch at once."""
    store = EtcdStore(own_etcd.endpoint, call_timeout=0.5)
    await store.connect()
    try:
        member = await store.members.current()
        async with contextlib.aclosing(store.watch("/hang/", 0)) as watch:
            pending = asyncio.create_task(collect(watch, 1, timeout=30))
            await asyncio.sleep(0.2)
            os.kill(own_etcd.proc.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailable):
                    await store.get("/hang/k")
            finally:
                os.kill(own_etcd.proc.pid, signal.SIGCONT)
            await store.put("/hang/k", b"v")
            assert [e.key for e in await pending] == ["/hang/k"]
        assert await store.members.current() is member and store.failovers == 0
    finally:
        await store.close()


async def _answers(store: Store) -> bool:
    try:
        await store.get("/k")
        return True
    except StoreUnavailable:
        return False


async def test_watch_fails_when_connection_drops(etcd_server: EtcdProcess) -> None:
    proxy = await TcpProxy(etcd_server.client_port).start()
    store = EtcdStore(proxy.endpoint)
    try:
        await store.connect()
        async with contextlib.aclosing(store.watch("/drop/", 0)) as watch:
            pending = asyncio.create_task(collect(watch, 1, timeout=30))
            await asyncio.sleep(0.2)
            await proxy.cut()
            with pytest.raises(StoreUnavailable, match=proxy.endpoint):
                await asyncio.wait_for(pending, 5)
    finally:
        await store.close()
        await proxy.close()


async def test_mirror_catches_up_across_etcd_restart(own_etcd: EtcdProcess, caplog) -> None:
    caplog.set_level("INFO", logger="overnet.store.mirror")
    reader, writer = EtcdStore(own_etcd.endpoint), EtcdStore(own_etcd.endpoint)
    await reader.connect()
    await writer.connect()
    await writer.put("/r/keep", b"1")
    await writer.put("/r/drop", b"2")
    mirror = Mirror(reader, "/r/")
    await mirror.start()
    queue = mirror.subscribe()
    try:
        own_etcd.stop(keep_data=True)
        await asyncio.sleep(1.0)  # the mirror notices and retries with backoff
        own_etcd.start()  # same data dir and port
        rev = await _retry(lambda: writer.put("/r/new", b"3"))
        await writer.delete("/r/drop")
        await writer.put("/r/keep", b"1b")
        seen: list = []
        while ("put", "/r/keep", b"1b") not in seen:
            seen += summary(await asyncio.wait_for(queue.get(), 15))
        assert ("put", "/r/new", b"3") in seen and ("delete", "/r/drop", None) in seen
        assert mirror.revision > rev and mirror.resumes >= 1
        kvs, _ = await writer.list("/r/")
        assert {k: i.value for k, i in mirror.items.items()} == {kv.key: kv.value for kv in kvs}
        assert "unavailable" in caplog.text and "watching again from revision" in caplog.text
    finally:
        await mirror.stop()
        await reader.close()
        await writer.close()


async def _retry(call, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.root
def test_etcd_process_in_network_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = f"overnet-test-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        with EtcdProcess(netns_path=f"/run/netns/{name}") as etcd:
            assert etcd.pid is not None
            put = subprocess.run(
                ["nsenter", f"--net=/run/netns/{name}", "etcdctl", "--endpoints",
                 etcd.endpoint, "put", "/ns/k", "v"],
                capture_output=True, text=True, timeout=10, env={**os.environ, "ETCDCTL_API": "3"})
            assert put.returncode == 0, put.stderr
            with pytest.raises(OSError):  # it listens in the namespace, not here
                socket.create_connection(("127.0.0.1", etcd.client_port), timeout=1).close()
        assert not etcd.tmp.exists()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def test_list_reads_in_pages_at_one_revision(etcd_server: EtcdProcess) -> None:
    store = EtcdStore(etcd_server.endpoint)
    store.list_page = 3
    try:
        for i in range(10):
            await store.put(f"/paged/k{i:02d}", f"v{i}".encode())
        await store.put("/pagedother", b"x")           # shares the prefix's bytes, not its keys
        kvs, rev = await store.list("/paged/")
        assert [kv.key for kv in kvs] == [f"/paged/k{i:02d}" for i in range(10)]
        assert [kv.value for kv in kvs] == [f"v{i}".encode() for i in range(10)]
        assert rev == max(kv.mod_revision for kv in kvs) + 1    # the put after them
        everything, _ = await store.list("")
        assert {kv.key for kv in kvs} | {"/pagedother"} <= {kv.key for kv in everything}
        pages, real_range = [], store._range

        async def range_then_write(*args):            # a write lands between two pages
            got = await real_range(*args)
            if not pages:
                await store.put("/paged/k05x", b"late")
            pages.append(got)
            return got

        store._range = range_then_write
        kvs, rev2 = await store.list("/paged/")
        assert len(pages) == 4 and "/paged/k05x" not in [kv.key for kv in kvs] and rev2 == rev
    finally:
        await store.delete("/paged", prefix=True)
        await store.close()
