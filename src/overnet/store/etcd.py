"""The etcd v3 backend, on aetcd (gRPC).

Every call has a deadline and maps gRPC/aetcd failures to our errors, naming the
endpoint: unreachable or overloaded -> StoreUnavailable, missing lease -> LeaseLost,
anything else etcd refuses -> StoreError. Transactions and watches talk to the gRPC stubs
aetcd exposes because aetcd's wrappers drop what we need: the response header revision of
a transaction, and the per-response batching and compaction signal of a watch.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar

# gRPC's fork support restarts its threads in a forked child. The agent forks to enter
# container namespaces (setns/unshare of CLONE_NEWNS), which the kernel refuses to a process
# with more than one thread (EINVAL): keep children single-threaded.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import aetcd  # noqa: E402
from aetcd import rpc  # noqa: E402
from aetcd.utils import prefix_range_end  # noqa: E402
from grpc.aio import EOF  # noqa: E402  (what a stream's read() returns once it closed)

from .base import (KV, Absent, Compacted, Compare, Delete, Event, Lease, LeaseLost,
                   ModRevision, Op, Put, Store, StoreError, StoreUnavailable, TxnResult,
                   ValueIs)

# gRPC channel tuning: reconnect quickly once etcd is back (the default backoff grows to
# 2 minutes), and notice a silently dead peer on long-lived watch streams. etcd refuses
# pings more often than every 5 s (its --grpc-keepalive-min-time).
_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}

# Codes meaning "try again later" (etcd down, restarting, leader change, overloaded).
_UNAVAILABLE_CODES = {
    rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED, rpc.StatusCode.UNKNOWN,
    rpc.StatusCode.INTERNAL, rpc.StatusCode.RESOURCE_EXHAUSTED, rpc.StatusCode.ABORTED,
    rpc.StatusCode.CANCELLED,
}


T = TypeVar("T")


def key_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd's [key, range_end) for every key under `prefix` ("" means every key)."""
    if not prefix:
        return b"\0", b"\0"
    key = prefix.encode()
    return key, prefix_range_end(key)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad etcd endpoint {endpoint!r}: expected HOST:PORT")
    return host, int(port)


def _rpc_error(exc: BaseException) -> rpc.AioRpcError | None:
    """The gRPC error behind an exception (aetcd wraps it as __cause__)."""
    while exc is not None:
        if isinstance(exc, rpc.AioRpcError):
            return exc
        exc = exc.__cause__  # type: ignore[assignment]
    return None


class EtcdStore(Store):
    """A Store on one etcd cluster. `endpoints`: "HOST:PORT" or several of them.

    connect() uses the first endpoint that answers; later calls stay on that one.
    Calls made before connect() connect first.
    """

    def __init__(self, endpoints: str | Sequence[str], *, call_timeout: float = 3.0,
                 connect_timeout: float = 3.0) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.endpoints = [e.strip() for e in endpoints if e.strip()]
        if not self.endpoints:
            raise ValueError("no etcd endpoint given")
        for e in self.endpoints:
            parse_endpoint(e)
        self.endpoint = ", ".join(self.endpoints)
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self._client: aetcd.Client | None = None
        self._connect_lock = asyncio.Lock()

    # --- connection and error mapping --------------------------------------------------

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._client is not None:
                return
            reasons = []
            for endpoint in self.endpoints:
                host, port = parse_endpoint(endpoint)
                client = aetcd.Client(host, port, timeout=self.call_timeout,
                                      options=dict(_CHANNEL_OPTIONS))
                try:
                    # aetcd's connect() only opens a lazy channel: a real read proves it answers
                    await asyncio.wait_for(client.get(b"\0"), self.connect_timeout)
                except Exception as e:  # noqa: BLE001 - every failure means "try the next"
                    reasons.append(self._reason(e, self.connect_timeout))
                    await self._close_quietly(client)
                    continue
                self._client = client
                self.endpoint = endpoint
                return
            raise StoreUnavailable(f"cannot reach etcd at {self.endpoint}: {'; '.join(reasons)}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._close_quietly(client)

    @staticmethod
    async def _close_quietly(client: aetcd.Client) -> None:
        try:
            await asyncio.wait_for(client.close(), 2)
        except Exception:  # noqa: BLE001 - closing a broken channel may fail; nothing to do
            pass

    async def _ready(self) -> aetcd.Client:
        if self._client is None:
            await self.connect()
        assert self._client is not None
        return self._client

    def _reason(self, exc: BaseException, timeout: float | None = None) -> str:
        if isinstance(exc, asyncio.TimeoutError):
            return f"no answer within {timeout or self.call_timeout}s"
        err = _rpc_error(exc)
        if err is not None:
            return f"{err.code().name}: {err.details()}"
        return str(exc) or type(exc).__name__

    def _map(self, exc: BaseException) -> StoreError:
        """Turn an aetcd/gRPC exception into ours (to raise `from exc`)."""
        err = _rpc_error(exc)
        if err is not None and err.code() == rpc.StatusCode.NOT_FOUND \
                and "lease not found" in (err.details() or ""):
            return LeaseLost(f"etcd at {self.endpoint}: {err.details()}")
        if err is None or err.code() in _UNAVAILABLE_CODES or isinstance(
                exc, (asyncio.TimeoutError, aetcd.ConnectionFailedError,
                      aetcd.ConnectionTimeoutError)):
            return StoreUnavailable(f"cannot reach etcd at {self.endpoint}: {self._reason(exc)}")
        return StoreError(f"etcd at {self.endpoint}: {self._reason(exc)}")

    async def _call(self, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run one aetcd call with a deadline, mapping its errors."""
        client = await self._ready()
        try:
            # aetcd passes call_timeout to gRPC; this outer deadline also covers the channel
            return await asyncio.wait_for(fn(client), self.call_timeout + 1)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - mapped, not swallowed
            raise self._map(e) from e

    # --- KV ------------------------------------------------------------------------------

    @staticmethod
    def _kv(kv: Any) -> KV:
        return KV(kv.key.decode(), bytes(kv.value), kv.create_revision, kv.mod_revision,
                  kv.lease)

    async def get(self, key: str) -> KV | None:
        got = await self._call(lambda c: c.get(key.encode()))
        return self._kv(got) if got is not None else None

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        start, end = key_range(prefix)
        got = await self._call(lambda c: c.get_range(start, end, sort_order="ascend"))
        return [self._kv(kv) for kv in got.kvs], got.header.revision

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        got = await self._call(lambda c: c.put(key.encode(), value, lease=lease or None))
        return got.header.revision

    async def delete(self, key: str, prefix: bool = False) -> int:
        if prefix:
            start, end = key_range(key)
            got = await self._call(lambda c: c.delete_range(start, end))
        else:
            got = await self._call(lambda c: c.delete(key.encode()))
        return got.deleted if got is not None else 0

    async def compact(self, revision: int) -> None:
        """Drop history older than `revision` (etcd compaction)."""
        await self._call(lambda c: c.compact(revision))

    # --- transactions ----------------------------------------------------------------------

    @staticmethod
    def _compare(client: aetcd.Client, c: Compare) -> Any:
        t = client.transactions
        if isinstance(c, Absent):
            return t.create(c.key.encode()) == 0
        if isinstance(c, ModRevision):
            return t.mod(c.key.encode()) == c.revision
        if isinstance(c, ValueIs):
            return t.value(c.key.encode()) == c.value
        raise TypeError(f"unknown compare {c!r}")

    @staticmethod
    def _op(op: Op) -> rpc.RequestOp:
        if isinstance(op, Put):
            return rpc.RequestOp(request_put=rpc.PutRequest(
                key=op.key.encode(), value=op.value, lease=op.lease))
        if isinstance(op, Delete):
            key, end = key_range(op.key) if op.prefix else (op.key.encode(), b"")
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=key, range_end=end))
        raise TypeError(f"unknown op {op!r}")

    # (builtins.list: inside the class body, `list` is the list() method)
    async def txn(self, compares: builtins.list[Compare], success: builtins.list[Op],
                  failure: builtins.list[Op] | None = None) -> TxnResult:
        async def run(client: aetcd.Client) -> TxnResult:
            request = rpc.TxnRequest(
                compare=[self._compare(client, c).build_message() for c in compares],
                success=[self._op(op) for op in success],
                failure=[self._op(op) for op in failure or []])
            resp = await client.kvstub.Txn(request, timeout=self.call_timeout,
                                           metadata=client.metadata)
            return TxnResult(resp.succeeded, resp.header.revision)
        return await self._call(run)

    # --- leases ------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        got = await self._call(lambda c: c.lease(ttl))
        return Lease(got.id, got.ttl)  # etcd may raise a small TTL to its minimum (2 s)

    async def refresh(self, lease: Lease) -> int:
        reply = await self._call(lambda c: c.refresh_lease(lease.id))
        if reply is None or reply.TTL <= 0:
            raise LeaseLost(f"lease {lease.id:x} expired or revoked (etcd at {self.endpoint})")
        return reply.TTL

    async def revoke(self, lease: Lease) -> None:
        try:
            await self._call(lambda c: c.revoke_lease(lease.id))
        except LeaseLost:
            pass  # already gone: that is what we wanted

    # --- watch ---------------------------------------------------------------------------------

    async def watch(self, prefix: str,
                    start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        client = await self._ready()
        key, end = key_range(prefix)
        # One gRPC stream per watch (not aetcd's shared Watcher): a broken stream then
        # fails exactly this watch, and each response arrives as one batch.
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            try:
                await asyncio.wait_for(call.write(rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=key, range_end=end,
                        start_revision=max(start_revision, 0)))), self.call_timeout)
                created = False
                while True:
                    # The first answer (watch created) must come quickly; then we wait forever.
                    resp = await (call.read() if created else
                                  asyncio.wait_for(call.read(), self.call_timeout))
                    if resp is EOF:
                        raise StoreUnavailable(
                            f"cannot reach etcd at {self.endpoint}: watch stream closed")
                    created = created or resp.created
                    if resp.compact_revision:
                        raise Compacted(resp.compact_revision)
                    if resp.canceled:
                        raise StoreUnavailable(f"cannot reach etcd at {self.endpoint}: "
                                               f"watch canceled: {resp.cancel_reason}")
                    if resp.events:
                        yield [self._event(e) for e in resp.events]
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001 - mapped, not swallowed
                raise self._map(e) from e
        finally:
            call.cancel()

    @staticmethod
    def _event(e: Any) -> Event:
        kv = e.kv
        if e.type == rpc.Event.DELETE:
            return Event("delete", kv.key.decode(), None, kv.mod_revision)
        return Event("put", kv.key.decode(), bytes(kv.value), kv.mod_revision)
