"""Typed, validated reads over the agent's mirror of the store (no I/O).

Nothing read from the store is taken on faith: every record is parsed and checked (bad values
are logged with their key and skipped), and endpoints are admitted only against the cluster:
their tunnel endpoint must be the address of a host on the network, their address inside the
network and unique in it (first writer wins). What is not admitted is never programmed anywhere.
A network's hosts are its members (agent/membership.py), admitted the same way: one address,
one host.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from ..store import keys
from ..store.records import (BlockRecord, EndpointRecord, HostRecord, NetworkRecord, Record,
                             ServiceRecord, decode)
from ..store.validate import admit_endpoints, admit_hosts

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)
T = TypeVar("T")


class ClusterView:
    def __init__(self, mirror: Any) -> None:
        self.mirror = mirror     # its `items` (key -> Item(value, mod_revision)) stay current
        self._decoded: dict[str, tuple[int, object]] = {}
        self._admitted: dict[str, tuple[tuple, list[EndpointRecord], int]] = {}
        # Networks not in the store whose endpoints are (host subnets: every host's bridge
        # is part of one routed network), with the record to check them against.
        self.local_networks: dict[str, NetworkRecord] = {}
        # Caches keyed on the mirror's generation of the prefixes they derive from: a change
        # to one network does not make every host re-scan and re-admit everything else.
        self._under: dict[str, tuple[int, list[str]]] = {}     # prefix -> (generation, keys)
        self._hosts: dict[str, tuple[Any, dict[str, HostRecord]]] = {}    # net_id -> ...
        self._present: dict[str, tuple[Any, frozenset[str]]] = {}
        self._owners: dict[str, tuple[Any, frozenset[str]]] = {}

    @property
    def items(self) -> dict:
        return self.mirror.items

    def _decode(self, cls: type[R], key: str, item: Any) -> R | None:
        """Each value is parsed once per revision."""
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == item.mod_revision:
            return cached[1]  # type: ignore[return-value]
        rec = decode(cls, key, item.value)
        if len(self._decoded) > 4 * len(self.items) + 64:
            self._decoded = {k: v for k, v in self._decoded.items() if k in self.items}
        self._decoded[key] = (item.mod_revision, rec)
        return rec

    def keys_under(self, prefix: str) -> list[str]:
        """The keys under `prefix`: one scan of the copy per prefix and change under it, however
        often a start or a reconcile asks (peers, names, DNS and used addresses all ask for
        the same network's endpoints)."""
        def scan() -> list[str]:
            found = self.mirror.keys_in(prefix)    # one network's records: indexed
            return [k for k in list(self.items) if k.startswith(prefix)] \
                if found is None else found

        return _memo(self._under, prefix, self.mirror.generation(prefix), scan)

    def _records(self, prefix: str, cls: type[R]) -> list[tuple[str, int, R]]:
        """(key, mod_revision, record) under a prefix, oldest first."""
        out = []
        for key in self.keys_under(prefix):
            item = self.items.get(key)
            rec = self._decode(cls, key, item) if item is not None else None
            if rec is not None:
                out.append((key, item.mod_revision, rec))
        out.sort(key=lambda t: t[1])
        return out

    def record_at(self, key: str) -> Record | None:
        """The record at `key`, parsed by its kind (None if absent or bad)."""
        cls = _KINDS.get(keys.split(key)[0])
        item = self.items.get(key)
        return self._decode(cls, key, item) if cls is not None and item is not None else None

    def inspect(self, key: str) -> None:
        """Parse a record as it arrives, so a bad one is logged (once) even if nothing on
        this host ever reads it."""
        self.record_at(key)

    # --- networks ------------------------------------------------------------------------

    def networks(self) -> list[NetworkRecord]:
        return [r for key, _, r in self._records(keys.NETWORKS, NetworkRecord)
                if key == keys.network(r.id)]

    def network(self, net_id: str) -> NetworkRecord | None:
        item = self.items.get(keys.network(net_id))
        rec = self._decode(NetworkRecord, keys.network(net_id), item) if item else None
        return rec if rec is not None and rec.id == net_id else None

    # --- hosts -------------------------------------------------------------------------

    def hosts(self, net_id: str) -> dict[str, HostRecord]:
        """The hosts on a network and their tunnel addresses, up or not (an agent that is
        down does not take its host's containers off the network): agent/membership.py."""
        prefix = keys.members(net_id)
        return _memo(self._hosts, net_id, self.mirror.generation(prefix),
                     lambda: admit_hosts(self._records(prefix, HostRecord))[0])

    def present(self, net_id: str) -> frozenset[str]:
        """The hosts on a network whose agent renews its liveness lease now."""
        prefix = keys.present(net_id)
        return _memo(self._present, net_id, self.mirror.generation(prefix), lambda: frozenset(
            k[len(prefix):] for k in self.keys_under(prefix)))

    # --- endpoints and services ------------------------------------------------------

    def endpoints(self, net_id: str) -> list[EndpointRecord]:
        """The network's admitted endpoints, oldest first (cached until the network, its
        endpoints or its hosts change)."""
        net = self.network(net_id) or self.local_networks.get(net_id)
        stamp = (net, self.mirror.generation(keys.endpoints(net_id)),
                 self.mirror.generation(keys.members(net_id)))
        cached = self._admitted.get(net_id)
        if cached is not None and cached[0][0] is net and cached[0][1:] == stamp[1:]:
            return cached[1]
        candidates = [(k, rev, r) for k, rev, r in self._records(keys.endpoints(net_id),
                                                                  EndpointRecord)
                      if k == keys.endpoint(net_id, r.ip)]
        admitted, rejected = admit_endpoints(net, candidates, self.hosts(net_id)) if net \
            else ([], [])
        self._admitted[net_id] = (stamp, admitted, len(rejected))
        if len(self._admitted) > 1024:
            self._admitted.clear()
        return admitted

    def rejects(self, net_id: str) -> int:
        """How many of the network's endpoint records its admission rejected."""
        self.endpoints(net_id)
        return self._admitted.get(net_id, ((), [], 0))[2]

    def owners(self, net_id: str) -> frozenset[str]:
        """The hosts the network's endpoint records name, admitted or not (cached until the
        network's endpoints change)."""
        prefix = keys.endpoints(net_id)
        return _memo(self._owners, net_id, self.mirror.generation(prefix), lambda: frozenset(
            r.host for _, _, r in self._records(prefix, EndpointRecord)))

    def services(self, net_id: str | None = None) -> list[ServiceRecord]:
        prefix = keys.services(net_id) if net_id else keys.SERVICES
        return [r for _, _, r in self._records(prefix, ServiceRecord)]

    def service(self, net_id: str, name: str) -> ServiceRecord | None:
        item = self.items.get(keys.service(net_id, name))
        return self._decode(ServiceRecord, keys.service(net_id, name), item) if item else None


def _memo(table: dict[str, tuple[Any, T]], key: str, stamp: Any, compute: Callable[[], T]) -> T:
    """compute(), kept in `table` under `key` until `stamp` changes (a table grown past 1024
    entries starts afresh)."""
    cached = table.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    if len(table) > 1024:
        table.clear()
    value = compute()
    table[key] = (stamp, value)
    return value


_KINDS: dict[str, type[Record]] = {
    "networks": NetworkRecord, "endpoints": EndpointRecord, "services": ServiceRecord,
    "hosts": HostRecord, "alive": HostRecord, "members": HostRecord, "present": HostRecord,
    "blocks": BlockRecord}
