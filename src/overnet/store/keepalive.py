"""Keep one lease alive, and replace it when it is lost.

aetcd has no automatic keep-alive, so a background task refreshes the lease every ttl/3 (a
little sooner, at random: agents started together do not refresh together).
The owner's `on_new_lease(lease)` puts its leased keys: for the first lease (in start())
and again whenever the lease is gone (expired or revoked) and a new one was granted. After an
outage, however long, the store itself says whether the lease outlived it: the first refresh
that reaches it either keeps the lease or fails with LeaseLost. (etcd extends every lease when
it elects a leader, so a lease may well outlive an outage longer than its TTL: the death of
the member it was refreshed on, a restart of the whole cluster.)
Nothing here raises once started: outages are logged once and retried every
`retry_interval` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..periodic import jittered
from .base import Lease, LeaseLost, Store, StoreError, StoreUnavailable

log = logging.getLogger("overnet.store.keepalive")

T = TypeVar("T")


class KeepAlive:
    def __init__(self, store: Store, ttl: int,
                 on_new_lease: Callable[[Lease], Awaitable[None]], *,
                 retry_interval: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self.on_new_lease = on_new_lease
        self.retry_interval = retry_interval
        self.renewals = 0  # leases granted after the first one
        self.refreshes = 0  # keep-alives the store accepted (for metrics)
        self._lease: Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self._need_new = False  # the current lease is gone
        self._owner_pending = False  # on_new_lease has not yet succeeded for the current lease
        self._outage = False

    @property
    def lease(self) -> Lease:
        if self._lease is None:
            raise RuntimeError("KeepAlive not started")
        return self._lease

    async def start(self) -> None:
        """Grant the first lease, await `on_new_lease(lease)`, then keep the lease alive.

        Raises StoreUnavailable if the store is unreachable, and whatever `on_new_lease`
        raises (the lease then just expires)."""
        try:
            self._lease = await self._bounded(self.store.grant(self.ttl))
        except TimeoutError:
            raise StoreUnavailable(f"{self.store.endpoint}: no answer to a lease grant") from None
        await self.on_new_lease(self._lease)
        self._task = asyncio.create_task(self._run(), name=f"keepalive {self._lease.id:x}")

    async def stop(self, revoke: bool = True) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if revoke and self._lease is not None:
            try:
                await self._bounded(self.store.revoke(self._lease))
            except (TimeoutError, StoreError) as e:
                log.warning("could not revoke lease %x: %s (it will expire)", self._lease.id, e)

    async def _bounded(self, aw: Awaitable[T]) -> T:
        """Wait at most ttl/2 (refreshes come every ttl/3, so one that takes that long still
        lands in time); then TimeoutError. The call itself is left to finish on its own
        deadline, not cancelled: a store with several members (EtcdStore) moves to a live
        one only when it sees the call to a dead or hung member fail, and the lease lives in
        the cluster, so the next refresh, on that member, keeps it."""
        task = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(self.ttl / 2, self.retry_interval,
                                                             1.0))
        except BaseException:
            task.cancel()
            raise
        if not done:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise TimeoutError()
        return task.result()

    async def _new_lease(self, why: str) -> None:
        old = self._lease
        lease = await self._bounded(self.store.grant(self.ttl))
        self._lease, self._need_new, self._owner_pending = lease, False, True
        self.renewals += 1
        log.warning("lease %x %s; granted lease %x", old.id if old else 0, why, lease.id)
        await self._call_owner()

    async def _call_owner(self) -> None:
        assert self._lease is not None
        await self.on_new_lease(self._lease)
        self._owner_pending = False

    async def _step(self) -> None:
        if self._need_new:
            await self._new_lease("was lost")
        else:
            await self._bounded(self.store.refresh(self.lease))
            self.refreshes += 1
            if self._owner_pending:
                await self._call_owner()

    async def _run(self) -> None:
        while True:
            if self._need_new and not self._outage:
                delay = 0.0  # lease lost while the store answers: replace it right away
            elif self._outage or self._need_new or self._owner_pending:
                delay = self.retry_interval
            else:
                delay = jittered(self.ttl / 3)
            await asyncio.sleep(delay)
            try:
                await self._step()
                if self._outage:
                    log.info("store reachable again; lease %x alive", self.lease.id)
                    self._outage = False
            except asyncio.CancelledError:
                raise
            except LeaseLost:          # the store answers: replace the lease right away
                if self._outage:
                    log.info("store reachable again; lease %x did not outlive the outage",
                             self.lease.id)
                    self._outage = False
                self._need_new = True
            except (TimeoutError, StoreUnavailable) as e:
                if not self._outage:
                    log.warning("cannot keep lease %x alive: %s; retrying every %.0fs",
                                self.lease.id, e or "timeout", self.retry_interval)
                    self._outage = True
            except Exception:
                log.exception("keep-alive of lease %x failed; retrying", self.lease.id)
