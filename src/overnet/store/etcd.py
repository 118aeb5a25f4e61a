"""The etcd v3 backend, on aetcd (gRPC), with failover between the members of a cluster.

Every call has a deadline and maps gRPC/aetcd failures to our errors, naming the
endpoint: unreachable or overloaded -> StoreUnavailable, missing lease -> LeaseLost,
anything else etcd refuses -> StoreError. Transactions and watches talk to the gRPC stubs
aetcd exposes because aetcd's wrappers drop what we need: the response header revision of
a transaction, and the per-response batching and compaction signal of a watch.

Failover (see members.py): calls go to one member at a time. When a call to it fails as
unavailable (refused, reset, deadline exceeded, no leader), the store drops that member, asks
every member at once, moves to the first one that answers and retries the call there, until
`failover_timeout` after the call began; calls still waiting on the dropped member move too.
Retrying is harmless for reads, puts, deletes and lease calls. A transaction is retried as
well, and when a failed attempt may have been applied (its request was sent) and the
retry's compares fail, the store checks whether the keys hold exactly what the first attempt
wrote (see `_applied`). Watches on a dropped member end with StoreUnavailable, so a Mirror
watches again on the new member from the revision after the last it saw: no event is lost.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

# gRPC's fork support restarts its threads in a forked child. The agent forks to enter
# container namespaces (setns/unshare of CLONE_NEWNS), which the kernel refuses to a process
# with more than one thread (EINVAL): keep children single-threaded.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import aetcd
from aetcd import rpc
from aetcd.utils import prefix_range_end
from grpc.aio import EOF  # what a stream's read() returns once it closed

from .base import (
    KV,
    Absent,
    Compacted,
    Compare,
    Delete,
    Event,
    Lease,
    LeaseLost,
    ModRevision,
    Op,
    Put,
    Store,
    StoreError,
    StoreUnavailable,
    TxnResult,
    ValueIs,
)
from .members import (
    Member,
    Members,
    NoMember,
    abandon,
    bounded,
    describe,
    parse_endpoint,
    rpc_error,
    unsent,
)

log = logging.getLogger("overnet.store.etcd")

# Codes meaning "try again later" (etcd down, restarting, leader change, overloaded).
_UNAVAILABLE_CODES = {
    rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED, rpc.StatusCode.UNKNOWN,
    rpc.StatusCode.INTERNAL, rpc.StatusCode.RESOURCE_EXHAUSTED, rpc.StatusCode.ABORTED,
    rpc.StatusCode.CANCELLED,
}
# A watch with this metadata is cancelled by etcd when its member loses the leader, so a
# member cut off from the quorum does not leave the watch silently waiting.
_REQUIRE_LEADER = (("hasleader", "true"),)

T = TypeVar("T")
LIST_PAGE = 256      # keys per range request of a list (see EtcdStore.list)

__all__ = ["EtcdStore", "key_range", "parse_endpoint"]


class _Dropped(StoreUnavailable):
    """A call abandoned because its member was dropped (it never answered)."""


def key_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd's [key, range_end) for every key under `prefix` ("" means every key)."""
    if not prefix:
        return b"\0", b"\0"
    key = prefix.encode()
    return key, prefix_range_end(key)


class EtcdStore(Store):
    """A Store on one etcd cluster. `endpoints`: "HOST:PORT" or several (the members).

    connect() asks every member at once and uses the first that answers; calls stay on it
    until it fails, then move to another member (see the module's doc). Calls made before
    connect() connect first. Each attempt has `call_timeout`; a call that fails over is
    retried until `failover_timeout` (default call_timeout + 1) after it began. With one
    member there is nowhere to fail over to: a failed call raises, and the connection stays.
    """

    def __init__(self, endpoints: str | Sequence[str], *, call_timeout: float = 3.0,
                 connect_timeout: float = 3.0, failover_timeout: float | None = None) -> None:
        self.members = Members(endpoints, call_timeout=call_timeout,
                               connect_timeout=connect_timeout)
        self.endpoints = self.members.endpoints
        self.endpoint = ", ".join(self.endpoints)
        self.call_timeout = call_timeout
        self.failover_timeout = (call_timeout + 1 if failover_timeout is None
                                 else failover_timeout)
        self.failovers = 0  # moves to another member after a failure
        self.list_page = LIST_PAGE
        self._revision = 0  # the highest store revision a response showed us

    # --- connection and error mapping --------------------------------------------------

    async def connect(self) -> None:
        member = await self.members.current()
        self.endpoint = member.endpoint

    async def close(self) -> None:
        await self.members.close()

    async def _member(self) -> Member:
        member = await self.members.current()
        self.endpoint = member.endpoint
        return member

    def _drop(self, member: Member, err: StoreError) -> None:
        if self.members.drop(member):
            self.failovers += 1
            log.warning("etcd member %s failed (%s); moving to another member",
                        member.endpoint, err)

    def _map(self, exc: BaseException, endpoint: str) -> StoreError:
        """Turn an aetcd/gRPC exception into ours (to raise `from exc`)."""
        err, why = rpc_error(exc), describe(exc, self.call_timeout)
        if err is not None and err.code() == rpc.StatusCode.NOT_FOUND \
                and "lease not found" in (err.details() or ""):
            return LeaseLost(f"etcd at {endpoint}: {err.details()}")
        if err is None or err.code() in _UNAVAILABLE_CODES or isinstance(
                exc, (asyncio.TimeoutError, aetcd.ConnectionFailedError,
                      aetcd.ConnectionTimeoutError)):
            return StoreUnavailable(f"cannot reach etcd at {endpoint}: {why}")
        return StoreError(f"etcd at {endpoint}: {why}")

    async def _call(self, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run one aetcd call with a deadline, on the current member, mapping its errors;
        when that member fails, move to another and try again until `failover_timeout`."""
        deadline = time.monotonic() + self.failover_timeout
        while True:
            try:
                member = await self._member()
            except NoMember as e:
                # every member refused the connection: nothing listens, fail now
                if e.refused or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)  # members answer but have no leader (an election)
                continue
            with self.members.using(member):
                try:
                    return await self._attempt(fn, member)
                except StoreError as e:
                    if not isinstance(e, _Dropped) or time.monotonic() >= deadline:
                        raise
                except Exception as e:
                    err = self._map(e, member.endpoint)
                    if not isinstance(err, StoreUnavailable):
                        raise err from e
                    self._drop(member, err)
                    if not self.members.can_fail_over or time.monotonic() >= deadline:
                        raise err from e

    async def _attempt(self, fn: Callable[[aetcd.Client], Awaitable[T]], member: Member) -> T:
        """One try of a call on `member`. A call still waiting when the member is dropped
        (another call found it dead or hung) is abandoned at once, to be retried elsewhere,
        rather than waiting out its own deadline on a member nobody uses any more."""
        # aetcd passes call_timeout to gRPC; this deadline also covers the channel
        call = asyncio.ensure_future(fn(member.client))
        dropped = asyncio.ensure_future(member.dropped.wait())
        try:
            done, _ = await asyncio.wait({call, dropped}, timeout=self.call_timeout + 1,
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            abandon(call)
            raise
        finally:
            dropped.cancel()
        if call in done:
            return call.result()
        abandon(call)
        if dropped in done:
            raise _Dropped(f"cannot reach etcd at {member.endpoint}: member dropped after "
                           "failed calls")
        raise TimeoutError()

    def _seen(self, revision: int) -> int:
        self._revision = max(self._revision, revision)
        return revision

    # --- KV ------------------------------------------------------------------------------

    @staticmethod
    def _kv(kv: Any) -> KV:
        return KV(kv.key.decode(), bytes(kv.value), kv.create_revision, kv.mod_revision,
                  kv.lease)

    async def get(self, key: str) -> KV | None:
        got = await self._call(lambda c: c.get(key.encode()))
        return self._kv(got) if got is not None else None

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under `prefix` at one revision, in key order, read `list_page` keys at
        a time: one response for a whole prefix grows with the cluster (gRPC refuses more
        than 4 MB, a few thousand endpoints) and is decoded at once (an agent re-listing
        after an outage held ~2 MB more at 1,000 endpoints). If the revision of the first
        page is compacted before the last page, the list starts over."""
        for _ in range(3):
            try:
                return await self._list_at_one_revision(prefix)
            except StoreError as e:
                if "compacted" not in str(e):
                    raise
        return await self._list_at_one_revision(prefix)

    async def _list_at_one_revision(self, prefix: str) -> tuple[builtins.list[KV], int]:
        start, end = key_range(prefix)
        out: builtins.list[KV] = []
        revision = 0        # the first page's; the following pages are read at it
        while True:
            got = await self._call(lambda c, key=start, at=revision: self._range(c, key, end, at))
            revision = revision or got.header.revision
            out.extend(self._kv(kv) for kv in got.kvs)
            if not got.more or not got.kvs:
                return out, self._seen(revision)
            start = got.kvs[-1].key + b"\0"

    async def _range(self, client: aetcd.Client, key: bytes, end: bytes, revision: int) -> Any:
        request = rpc.RangeRequest(key=key, range_end=end, limit=self.list_page,
                                   revision=revision, sort_order=rpc.RangeRequest.ASCEND,
                                   sort_target=rpc.RangeRequest.KEY)
        return await client.kvstub.Range(request, timeout=self.call_timeout,
                                         metadata=client.metadata)

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        got = await self._call(lambda c: c.put(key.encode(), value, lease=lease or None))
        return self._seen(got.header.revision)

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
        seen_before = self._revision
        maybe_applied = False  # an attempt failed after its request may have reached etcd

        async def run(client: aetcd.Client) -> TxnResult:
            nonlocal maybe_applied
            request = rpc.TxnRequest(
                compare=[self._compare(client, c).build_message() for c in compares],
                success=[self._op(op) for op in success],
                failure=[self._op(op) for op in failure or []])
            try:
                resp = await client.kvstub.Txn(request, timeout=self.call_timeout,
                                               metadata=client.metadata)
            except BaseException as e:
                maybe_applied = maybe_applied or not unsent(e)
                raise
            return TxnResult(resp.succeeded, self._seen(resp.header.revision))

        result = await self._call(run)
        if not result.succeeded and maybe_applied:
            revision = await self._applied(success, seen_before)
            if revision:
                log.info("etcd: a transaction whose answer was lost had been applied at "
                         "revision %d", revision)
                return TxnResult(True, revision)
        return result

    async def _applied(self, success: builtins.list[Op], after: int) -> int | None:
        """The revision at which `success` was applied, if the store shows it was: every
        put key holds our value and lease, all written at one revision newer than `after`,
        and every deleted key is absent. (Only another transaction writing exactly the same
        values could fool this; overnet's records carry unique IDs.)"""
        revisions = set()
        for op in success:
            if isinstance(op, Put):
                kv = await self.get(op.key)
                if kv is None or kv.value != op.value or kv.lease != op.lease:
                    return None
                revisions.add(kv.mod_revision)
            elif isinstance(op, Delete) and not op.prefix and await self.get(op.key):
                return None
        if len(revisions) != 1 or min(revisions) <= after:
            return None
        return revisions.pop()

    # --- leases ------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        got = await self._call(lambda c: c.lease(ttl))
        return Lease(got.id, got.ttl)  # etcd may raise a small TTL to its minimum (2 s)

    async def refresh(self, lease: Lease) -> int:
        # any member can refresh a lease: it lives in the cluster, not in one member
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
        member = await self._member()
        key, end = key_range(prefix)
        client = member.client
        # One gRPC stream per watch (not aetcd's shared Watcher): a broken stream then
        # fails exactly this watch, and each response arrives as one batch.
        call = rpc.WatchStub(client.channel).Watch(
            metadata=tuple(client.metadata or ()) + _REQUIRE_LEADER)
        with self.members.using(member):
            # One waiter on the member's drop for the whole watch, not one per response: the
            # agents of a process may share a member, whose drop event would then hold (and
            # remove, one by one) a waiter per watch for every response.
            dropped = asyncio.ensure_future(member.dropped.wait())
            try:
                await bounded(call.write(rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=key, range_end=end,
                        start_revision=max(start_revision, 0)))), self.call_timeout)
                created = False
                while True:
                    # The first answer (watch created) must come quickly; then we wait forever.
                    resp = await self._read(call, member, dropped,
                                            None if created else self.call_timeout)
                    created = created or resp.created
                    if resp.compact_revision:
                        raise Compacted(resp.compact_revision)
                    if resp.canceled:
                        raise StoreUnavailable(f"cannot reach etcd at {member.endpoint}: "
                                               f"watch canceled: {resp.cancel_reason}")
                    if resp.events:
                        yield [self._event(e) for e in resp.events]
            except StoreUnavailable as e:
                self._drop(member, e)
                raise
            except StoreError:
                raise
            except Exception as e:
                err = self._map(e, member.endpoint)
                if isinstance(err, StoreUnavailable):
                    self._drop(member, err)
                raise err from e
            finally:
                dropped.cancel()
                call.cancel()

    async def _read(self, call: Any, member: Member, dropped: asyncio.Future,
                    timeout: float | None) -> Any:
        """The stream's next response; StoreUnavailable once the store dropped `member`
        (calls found it failing: `dropped` is done) or the stream closed; TimeoutError after
        `timeout`."""
        read = asyncio.ensure_future(call.read())
        try:
            done, _ = await asyncio.wait({read, dropped}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            read.cancel()
            raise
        if read in done:
            if read.cancelled():  # its channel was closed under it (the store is closing)
                raise StoreUnavailable(f"cannot reach etcd at {member.endpoint}: "
                                       "watch stream cancelled")
            resp = read.result()
            if resp is not EOF:
                return resp
            why = "watch stream closed"
        elif dropped in done:
            read.cancel()
            why = "member dropped after failed calls; watching on another member"
        else:
            read.cancel()
            raise TimeoutError()
        raise StoreUnavailable(f"cannot reach etcd at {member.endpoint}: {why}")

    @staticmethod
    def _event(e: Any) -> Event:
        kv = e.kv
        if e.type == rpc.Event.DELETE:
            return Event("delete", kv.key.decode(), None, kv.mod_revision)
        return Event("put", kv.key.decode(), bytes(kv.value), kv.mod_revision)
