"""A resilient local copy of one prefix of the store.

The mirror lists the prefix, then watches from the revision after that list. When the
watch breaks (etcd restarted, connection dropped, the store moved to another member of the
cluster) it retries with backoff and watches again from the revision after the last one it
saw, on whichever member answers: etcd sends every event since, so nothing is lost and
nothing is listed again (after an etcd hiccup, every host of a large cluster listing the
whole store at once is a load etcd cannot carry). When that revision was compacted away,
or the store is behind it (restored from an older snapshot), it lists again instead,
replaces its copy and emits the differences as synthesized events. Either way a consumer
that applies every event it receives ends up with the same state as the store, whatever
happened in between. It logs, and never crashes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

from .base import Compacted, Event, Store, StoreUnavailable

log = logging.getLogger("overnet.store.mirror")


@dataclass(frozen=True, slots=True)
class Item:
    """What the mirror keeps per key (slots: one per key of the cluster)."""
    value: bytes
    mod_revision: int


def diff(old: dict[str, Item], new: dict[str, Item], revision: int) -> list[Event]:
    """Events turning `old` into `new`, by key. Deletes carry `revision` (the list's own:
    the real delete revision is unknowable after compaction)."""
    events = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if after is None:
            events.append(Event("delete", key, None, revision))
        elif before != after:
            events.append(Event("put", key, after.value, after.mod_revision))
    return events


class Mirror:
    # The backoff stays short: commands wait for the mirror to catch up with their own
    # writes (wait_revision), so after an outage the mirror must be back as soon as the
    # store is; a failed re-list of an unreachable store costs one refused connection.
    def __init__(self, store: Store, prefix: str, *, min_backoff: float = 0.1,
                 max_backoff: float = 0.5) -> None:
        self.store = store
        self.prefix = prefix
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.items: dict[str, Item] = {}
        self.revision = 0  # the store revision this copy is known to be current at
        self.relists = 0  # re-lists after a failure (not counting the first list)
        self.resumes = 0  # watches resumed after a failure, without a list
        self.state = "waiting"  # then "in-sync", "resyncing" while a watch is down
        self._subscribers: list[asyncio.Queue[list[Event]]] = []
        # called with every batch that changes the copy, before the queues see it
        self.listeners: list[Callable[[list[Event]], None]] = []
        self._changes = 0  # batches that changed the copy
        self._changed: dict[str, int] = {}  # "KIND/" and "KIND/SUB/" prefix -> _changes then
        self._index: dict[str, dict[str, None]] = {}  # "KIND/SUB/" prefix -> its keys
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """List the prefix, then keep the copy current in the background.

        Raises StoreUnavailable if that first list fails; after it, nothing raises.
        """
        kvs, rev = await self.store.list(self.prefix)
        self._replace({kv.key: Item(kv.value, kv.mod_revision) for kv in kvs}, rev)
        self.state = "in-sync"
        self._task = asyncio.create_task(self._run(), name=f"mirror {self.prefix}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def subscribe(self) -> asyncio.Queue[list[Event]]:
        """A queue of every later change, as batches of events (synthesized after a re-list).

        Read `items` right after subscribing (without awaiting in between) for the
        state the events apply to.
        """
        queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[Event]]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def generation(self, prefix: str) -> int:
        """A number that changes whenever a key under `prefix` changes, so readers can cache
        what they derive from the keys under it. Kept per prefix for the mirror's own
        prefix followed by one or two segments ("hosts/", "endpoints/NET/"); for any other
        prefix it changes with every change of the copy."""
        rel = prefix[len(self.prefix):] if prefix.startswith(self.prefix) else ""
        if rel.endswith("/") and 1 <= rel.count("/") <= 2:
            return self._changed.get(prefix, 0)
        return self._changes

    def keys_in(self, prefix: str) -> list[str] | None:
        """The keys under `prefix` without scanning the copy, for the mirror's own prefix
        followed by two segments ("endpoints/NET/": one network's records); None for any
        other prefix."""
        rel = prefix[len(self.prefix):] if prefix.startswith(self.prefix) else ""
        if rel.endswith("/") and rel.count("/") == 2:
            return list(self._index.get(prefix, ()))
        return None

    async def wait_revision(self, revision: int, timeout: float | None = None) -> None:
        """Return once the mirror has caught up to `revision` (raises TimeoutError after
        `timeout`). Meant for revisions of writes under the prefix: the mirror only learns
        about revisions through events under its prefix (or a re-list)."""
        async def wait() -> None:
            while self.revision < revision:
                await self._progress.wait()
        await asyncio.wait_for(wait(), timeout)

    # --- internals ----------------------------------------------------------------------

    def _publish(self, events: list[Event], revision: int) -> None:
        self.revision = revision
        if events:
            self._note_changes(events)
            for listener in self.listeners:
                listener(events)
            for queue in self._subscribers:
                queue.put_nowait(events)
        # wake every waiter; they re-check their revision against the new one
        self._progress.set()
        self._progress = asyncio.Event()

    def _note_changes(self, events: list[Event]) -> None:
        """Stamp the prefixes the events touch, and keep the index of two-segment prefixes
        (every change comes through here: a watch's events, a re-list's differences)."""
        self._changes += 1
        base = len(self.prefix)
        for e in events:
            first = e.key.find("/", base)
            if first < 0 or not e.key.startswith(self.prefix):
                continue
            self._changed[e.key[:first + 1]] = self._changes
            second = e.key.find("/", first + 1)
            if second < 0:
                continue
            group = e.key[:second + 1]
            self._changed[group] = self._changes
            if e.type == "put":
                self._index.setdefault(group, {})[e.key] = None
            elif (keys := self._index.get(group)) is not None:
                keys.pop(e.key, None)
                if not keys:
                    del self._index[group]

    def _replace(self, items: dict[str, Item], revision: int) -> None:
        events = diff(self.items, items, revision)
        self.items = items
        self._publish(events, revision)

    def _apply(self, batch: list[Event]) -> None:
        for e in batch:
            if e.type == "put":
                assert e.value is not None
                self.items[e.key] = Item(e.value, e.mod_revision)
            else:
                self.items.pop(e.key, None)
        self._publish(batch, max([self.revision] + [e.mod_revision for e in batch]))

    async def _relist(self) -> int:
        kvs, rev = await self.store.list(self.prefix)
        before = self.items
        self._replace({kv.key: Item(kv.value, kv.mod_revision) for kv in kvs}, rev)
        self.relists += 1
        return len(diff(before, self.items, rev))

    async def _reconnect(self, relist: bool) -> None:
        """Before watching again after a failure: list again if the watch cannot resume."""
        if not relist:
            # the store's revision, without a key (nothing is under prefix + NUL)
            _, now = await self.store.list(self.prefix + "\0")
            relist = now < self.revision      # restored from an older snapshot
        if relist:
            changes = await self._relist()
            log.info("mirror %s: reconnected, re-listed at revision %d (%d changes)",
                     self.prefix, self.revision, changes)
        else:
            self.resumes += 1
            log.info("mirror %s: reconnected, watching again from revision %d",
                     self.prefix, self.revision + 1)

    async def _run(self) -> None:
        backoff = self.min_backoff
        failing = False  # log the first failure of an outage loudly, the retries quietly
        relist = False   # the watch cannot resume where it broke
        while True:
            try:
                if failing:
                    await self._reconnect(relist)
                    failing = relist = False
                    self.state = "in-sync"
                async for batch in self.store.watch(self.prefix, self.revision + 1):
                    self._apply(batch)
                    backoff = self.min_backoff
                raise StoreUnavailable("watch ended")
            except asyncio.CancelledError:
                raise
            except Compacted as e:
                log.warning("mirror %s: watch from revision %d compacted (%s); re-listing",
                            self.prefix, self.revision + 1, e)
                relist = True
            except StoreUnavailable as e:
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "mirror %s: store unavailable (%s); retrying in %.1fs",
                        self.prefix, e, backoff)
            except Exception:
                log.exception("mirror %s: unexpected error; retrying in %.1fs",
                              self.prefix, backoff)
                relist = True     # the copy may be half-updated: start it again
            failing, self.state = True, "resyncing"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
