"""The members of one etcd cluster, as EtcdStore sees them: one connection in use at a time.

`current()` returns the member calls go to; the first time, and again after `drop()`, it
asks every member at once (a linearizable read, so a member without a leader or quorum does
not count) and takes the first that answers. A dropped member's channel is closed once no
call uses it any more (closing a gRPC channel turns its calls in flight into
CancelledError), and its `dropped` event tells its watches to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

# before grpc loads: see etcd.py (forked children must stay single-threaded)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import aetcd
from aetcd import rpc

from .base import StoreUnavailable

# gRPC channel tuning: reconnect quickly once etcd is back (the default backoff grows to
# 2 minutes), notice a silently dead peer on long-lived watch streams (etcd refuses pings
# more often than every 5 s: its --grpc-keepalive-min-time), and give every channel its own
# subchannels: the process-wide pool would hand a new channel the old one's connection,
# still waiting out its reconnect backoff.
CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 500,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.use_local_subchannel_pool": 1,
    # A mirror lists its whole prefix in one answer: past ~10,000 endpoint records that is
    # more than gRPC's default 4 MB, refused (RESOURCE_EXHAUSTED), and no agent could start.
    "grpc.max_receive_message_length": -1,
}
# gRPC's words for a call that failed before anything was sent (no connection at all)
_UNSENT = ("failed to connect", "connection refused")

T = TypeVar("T")


async def bounded(aw: Awaitable[T], timeout: float) -> T:
    """asyncio.wait_for without its wait for the cancelled awaitable to finish: a gRPC call
    or channel close that is slow to cancel (a dead peer) cannot hold the caller past
    `timeout`. Raises TimeoutError; what was abandoned finishes in the background."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        abandon(task)
        raise
    if not done:
        abandon(task)
        raise TimeoutError()
    return task.result()


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancel `task` without waiting for it."""
    task.cancel()
    # its outcome no longer matters: retrieve it so asyncio does not log it as lost
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad etcd endpoint {endpoint!r}: expected HOST:PORT")
    return host, int(port)


def rpc_error(exc: BaseException | None) -> rpc.AioRpcError | None:
    """The gRPC error behind an exception (aetcd wraps it as __cause__)."""
    while exc is not None:
        if isinstance(exc, rpc.AioRpcError):
            return exc
        exc = exc.__cause__
    return None


def unsent(exc: BaseException) -> bool:
    """True if the call certainly never reached etcd (so it cannot have been applied)."""
    err = rpc_error(exc)
    return err is not None and err.code() == rpc.StatusCode.UNAVAILABLE and any(
        m in (err.details() or "").lower() for m in _UNSENT)


def describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {timeout}s"
    err = rpc_error(exc)
    if err is not None:
        return f"{err.code().name}: {err.details()}"
    return str(exc) or type(exc).__name__


class NoMember(StoreUnavailable):
    """No member answered. `refused`: every one refused the connection (nothing listens)."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(eq=False)
class Member:
    """One connection to one member."""
    endpoint: str
    client: aetcd.Client
    users: int = 0  # calls and watches in flight on it
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False


class Members:
    def __init__(self, endpoints: str | Sequence[str], *, call_timeout: float,
                 connect_timeout: float) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.endpoints = [e.strip() for e in endpoints if e.strip()]
        if not self.endpoints:
            raise ValueError("no etcd endpoint given")
        for e in self.endpoints:
            parse_endpoint(e)
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self._current: Member | None = None
        self._lock = asyncio.Lock()
        self._open: set[Member] = set()  # connections not closed yet
        self._closers: set[asyncio.Task[None]] = set()

    async def current(self) -> Member:
        """The member in use, connecting first if there is none (raises NoMember)."""
        member = self._current
        if member is not None:
            return member
        async with self._lock:
            if self._current is None:
                self._current = await self._dial()
            return self._current

    @property
    def can_fail_over(self) -> bool:
        """Whether there is another member to move to."""
        return len(self.endpoints) > 1

    def drop(self, member: Member) -> bool:
        """Stop using `member` (it failed). True if it was the one in use.

        A store of one member has nowhere else to go: it keeps its connection (gRPC
        reconnects it by itself when it breaks, and its watches end then). Dropping it would
        make every call in flight, and every agent watching, start a new connection at once:
        under a storm of starts, a slow answer then became connections that could not even
        be opened in time (seen once in the 50-host lab: 3 of 1,000 starts failed)."""
        if not self.can_fail_over:
            return False
        was_current = self._current is member
        if was_current:
            self._current = None
        member.dropped.set()
        self._close_if_idle(member)
        return was_current

    @contextlib.contextmanager
    def using(self, member: Member) -> Iterator[Member]:
        """Count a call or watch on `member`, so it is closed only once they are done."""
        member.users += 1
        try:
            yield member
        finally:
            member.users -= 1
            self._close_if_idle(member)

    async def close(self) -> None:
        """Close every connection now (calls still in flight on them are cancelled)."""
        self._current = None
        members, self._open = list(self._open), set()
        for m in members:
            m.dropped.set()
            m.closing = True
        await asyncio.gather(*(_close_quietly(m.client) for m in members),
                             *list(self._closers), return_exceptions=True)

    # --- internals -------------------------------------------------------------------------

    def _close_if_idle(self, member: Member) -> None:
        if member.dropped.is_set() and member.users == 0 and not member.closing:
            member.closing = True
            self._open.discard(member)
            self._close_later(member.client)

    def _close_later(self, client: aetcd.Client) -> None:
        task = asyncio.get_running_loop().create_task(_close_quietly(client))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _dial(self) -> Member:
        """Ask every member at once; the first that answers wins, the others are closed."""
        pending = {asyncio.create_task(self._probe(e)) for e in self.endpoints}
        failed: dict[str, tuple[str, bool]] = {}
        found: list[Member] = []
        try:
            while pending and not found:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    endpoint, result = task.result()
                    if isinstance(result, Member):
                        found.append(result)
                    else:
                        failed[endpoint] = result
        finally:
            for task in pending:  # they close their own client once cancelled
                abandon(task)
            for spare in found[1:]:
                self._close_later(spare.client)
        if found:
            self._open.add(found[0])
            return found[0]
        raise self._no_member(failed)

    def _no_member(self, failed: dict[str, tuple[str, bool]]) -> NoMember:
        if len(self.endpoints) == 1:
            why = failed[self.endpoints[0]][0]
        else:
            why = "; ".join(f"{e}: {failed[e][0]}" for e in self.endpoints if e in failed)
        return NoMember(f"cannot reach etcd at {', '.join(self.endpoints)}: {why}",
                        refused=all(refused for _, refused in failed.values()))

    async def _probe(self, endpoint: str) -> tuple[str, Member | tuple[str, bool]]:
        """(endpoint, a connected Member) or (endpoint, (why not, refused?))."""
        host, port = parse_endpoint(endpoint)
        client = aetcd.Client(host, port, timeout=self.call_timeout,
                              options=dict(CHANNEL_OPTIONS))
        try:
            # aetcd's connect() only opens a lazy channel: a real read proves it answers
            await bounded(client.get(b"\0"), self.connect_timeout)
        except asyncio.CancelledError:
            self._close_later(client)
            raise
        except Exception as e:  # noqa: BLE001 - every failure means "not this one"
            await _close_quietly(client)
            return endpoint, (describe(e, self.connect_timeout), unsent(e))
        return endpoint, Member(endpoint, client)


async def _close_quietly(client: aetcd.Client) -> None:
    with contextlib.suppress(Exception):  # closing a broken channel may fail: nothing to do
        await bounded(client.close(), 2)
