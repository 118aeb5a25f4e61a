"""The cluster store interface: a small key-value API with etcd v3 semantics.

Two backends implement it: `etcd.EtcdStore` (the real one, through aetcd) and
`memory.MemoryStore` (same behaviour, for unit tests). Keys are str, values bytes.
Revisions are etcd's: one cluster-wide counter bumped by every write.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Union


class StoreError(Exception):
    """Base of every store error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached; the message names the endpoint."""


class Compacted(StoreError):
    """A watch asked for a revision that was compacted away: re-list and watch again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {compact_revision})")
        self.compact_revision = compact_revision


class LeaseLost(StoreError):
    """The lease expired or was revoked."""


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    type: Literal["put", "delete"]
    key: str
    value: bytes | None  # None for deletes
    mod_revision: int


# --- transactions: a few comparisons, a few operations ---------------------------------

@dataclass(frozen=True)
class Absent:
    """The key does not exist (etcd: create_revision == 0)."""
    key: str


@dataclass(frozen=True)
class ModRevision:
    """The key's mod_revision equals `revision` (0 means absent)."""
    key: str
    revision: int


@dataclass(frozen=True)
class ValueIs:
    key: str
    value: bytes


Compare = Union[Absent, ModRevision, ValueIs]


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


Op = Union[Put, Delete]


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int


@dataclass
class Lease:
    id: int
    ttl: int
    extra: dict = field(default_factory=dict)


class Store(abc.ABC):
    """What the agent needs from the cluster store. All methods are coroutines."""

    endpoint: str = ""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Check the store answers; raise StoreUnavailable (naming the endpoint) within seconds."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def get(self, key: str) -> KV | None: ...

    @abc.abstractmethod
    async def list(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under `prefix`, sorted by key, and the store revision of that read."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write; returns the new revision."""

    @abc.abstractmethod
    async def delete(self, key: str, prefix: bool = False) -> int:
        """Delete one key (or every key under a prefix); returns how many went."""

    @abc.abstractmethod
    async def txn(self, compares: list[Compare], success: list[Op],
                  failure: list[Op] | None = None) -> TxnResult:
        """All compares true -> run `success`, else `failure`; atomically."""

    async def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        """Create-if-absent. True if this call created the key."""
        return (await self.txn([Absent(key)], [Put(key, value, lease)])).succeeded

    @abc.abstractmethod
    async def grant(self, ttl: int) -> Lease: ...

    @abc.abstractmethod
    async def refresh(self, lease: Lease) -> int:
        """Keep a lease alive once; returns the TTL left. Raises LeaseLost if it is gone."""

    @abc.abstractmethod
    async def revoke(self, lease: Lease) -> None: ...

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        """Batches of events under `prefix` from `start_revision` (inclusive).

        Raises Compacted if that revision is gone, StoreUnavailable when the stream
        breaks. Callers that need to survive both use `mirror.Mirror`.
        """
