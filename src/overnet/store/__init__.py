"""The cluster store: the Store interface, its etcd and in-memory backends, and helpers
(Mirror: a resilient local copy of a prefix; KeepAlive: a lease kept alive)."""

from __future__ import annotations

from .base import (KV, Absent, Compacted, Compare, Delete, Event, Lease, LeaseLost,
                   ModRevision, Op, Put, Store, StoreError, StoreUnavailable, TxnResult,
                   ValueIs)
from .etcd import EtcdStore
from .keepalive import KeepAlive
from .memory import MemoryState, MemoryStore, forget_named, named_state
from .mirror import Item, Mirror

__all__ = [
    "KV", "Absent", "Compacted", "Compare", "Delete", "Event", "Lease", "LeaseLost",
    "ModRevision", "Op", "Put", "Store", "StoreError", "StoreUnavailable", "TxnResult",
    "ValueIs", "EtcdStore", "KeepAlive", "MemoryState", "MemoryStore", "forget_named",
    "named_state", "Item", "Mirror", "open_store",
]

_FORMS = "etcd://HOST:PORT[,HOST:PORT...] or memory://NAME"


def open_store(url: str) -> Store:
    """A Store for `url` (not yet connected: call `await store.connect()`).

    etcd://HOST:PORT[,HOST:PORT...]  etcd; connect() uses the first endpoint that answers
    memory://NAME                    the process-wide in-memory store NAME (unit tests):
                                     every open of the same NAME shares one state
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "etcd" and rest:
        try:
            return EtcdStore(rest)
        except ValueError as e:
            raise ValueError(f"bad store URL {url!r} ({e}); expected {_FORMS}") from None
    if sep and scheme == "memory" and rest and "/" not in rest:
        return MemoryStore(named_state(rest))
    raise ValueError(f"bad store URL {url!r}; expected {_FORMS}")
