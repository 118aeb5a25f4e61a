"""The agent's watcher of itself: it turns what the agent does and what the store says into
events (events.py), and keeps the few numbers metrics and readiness need that the agent's
parts do not keep themselves (reconcile timings, programmed peers).

The agent calls it at a handful of points with one line each; everything else (host up and
down, networks created and removed) it learns from its own subscription to the mirror."""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..store import keys
from .events import EventLog

log = logging.getLogger(__name__)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Timings:
    """A histogram's data (Prometheus buckets), filled on the hot path without a lock."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)     # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip([*map(str, self.buckets), "+Inf"], self.counts):
            total += n
            out.append((bound, total))
        return out


class Observer:
    def __init__(self, host: str, events: EventLog | None = None) -> None:
        self.host = host
        self.events = events or EventLog(host)
        self.reconcile = Timings()
        self.failed_targets: set[str] = set()      # targets whose last reconcile failed
        self.programmed: dict[str, set] = {}       # network ID -> peers last programmed
        self._names: dict[str, str] = {}           # network ID -> name, for removals
        self._up: set[str] = set()                 # hosts present on a network of ours
        self._items: Any = {}                      # the agent's copy (seed)
        # the networks this host has endpoints on (set by the agent once it has them)
        self.networks: Callable[[], set[str]] = set
        # answers doctor requests of other hosts (set where the API is served: observe/path)
        self.on_doctor: Callable[[str, bytes], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- called by the agent -------------------------------------------------------------

    def reconciled(self, target: str, seconds: float, ok: bool) -> None:
        self.reconcile.observe(seconds)
        (self.failed_targets.discard if ok else self.failed_targets.add)(target)

    def peers(self, net: Any, peers: Iterable) -> None:
        """After a network's peers were programmed: an event for each one added or gone."""
        before = self.programmed.get(net.id, frozenset())
        if peers is before:          # a pass that changed nothing of them
            return
        now = peers if isinstance(peers, frozenset) else frozenset(peers)
        for p in sorted(now - before, key=str):
            self.events.emit("peer", "programmed", p.ip, network=net.name, mac=p.mac,
                             vtep=p.vtep)
        for p in sorted(before - now, key=str):
            self.events.emit("peer", "withdrawn", p.ip, network=net.name, mac=p.mac,
                             vtep=p.vtep)
        if now:
            self.programmed[net.id] = now
        else:
            self.programmed.pop(net.id, None)

    def lease(self, kind: str, actor: str, lease_id: int, keepalive: Any) -> None:
        """A lease was granted: the first one, or one that replaces a lost one."""
        if keepalive is not None and keepalive.renewals:
            self.events.emit("lease", "lost", actor, kind=kind)
        self.events.emit("lease", "acquired", actor, kind=kind, id=f"{lease_id:x}")

    # --- what the store says -------------------------------------------------------------

    def seed(self, items: Any) -> None:
        """The state the first events apply to (read right after subscribing)."""
        self._items = items
        for key, item in items.items():
            parts = keys.split(key)
            if parts[0] == "networks" and len(parts) == 2:
                self._names[parts[1]] = _field(item.value, "name") or parts[1]

    def store_events(self, batch: list) -> None:
        for ev in batch:
            parts = keys.split(ev.key)
            if parts[0] == "doctor":
                self._doctor(parts, ev)
            elif parts[0] == "present" and len(parts) == 3 and parts[2] != self.host:
                self._host(parts[1], parts[2], ev)
            elif parts[0] == "networks" and len(parts) == 2:
                self._network(parts[1], ev)

    def _host(self, net_id: str, name: str, ev: Any) -> None:
        """Hosts on this host's networks: up when first present on one (or found so when
        this host joined it), down when present on none while still a member where it
        went (a host leaving a network removes its membership first: agent/membership.py).
        Networks only read (`network inspect`) are not this host's: no events."""
        mine = self.networks()
        if net_id not in mine:
            return

        def present(host: str) -> bool:
            return any(keys.presence(n, host) in self._items for n in mine)

        if ev.type == "put":
            self._up = {h for h in self._up if present(h)}    # forget those of networks left
            if name not in self._up:
                self._up.add(name)
                self.events.emit("host", "up", name, address=_field(ev.value, "address"))
        elif not present(name):
            self._up.discard(name)
            if keys.member(net_id, name) in self._items:
                self.events.emit("host", "down", name)

    def _network(self, net_id: str, ev: Any) -> None:
        if ev.type == "put" and net_id not in self._names:
            self._names[net_id] = name = _field(ev.value, "name") or net_id
            self.events.emit("network", "create", name, id=net_id,
                             driver=_field(ev.value, "driver"),
                             subnet=_field(ev.value, "subnet"), vni=_field(ev.value, "vni"))
        elif ev.type == "delete" and net_id in self._names:
            self.events.emit("network", "destroy", self._names.pop(net_id), id=net_id)

    def _doctor(self, parts: tuple[str, ...], ev: Any) -> None:
        if len(parts) == 3 and parts[1] == self.host and ev.type == "put" and self.on_doctor:
            self.keep(asyncio.create_task(self.on_doctor(ev.key, ev.value)))

    def keep(self, task: asyncio.Task) -> None:
        """Hold a reference to background work until it ends (asyncio keeps only weak
        ones)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(self, queue: asyncio.Queue) -> None:
        """A supervised loop: the mirror's batches, as they come."""
        while True:
            self.store_events(await queue.get())


def _field(value: bytes | None, name: str) -> Any:
    try:
        data = json.loads(value or b"{}")
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None
