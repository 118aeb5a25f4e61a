"""Records checked against the cluster, before anything reaches the kernel (pure, no I/O).

`records.py` checks one record alone; a record can still be well formed and wrong for the
cluster: a VTEP that is not its host's address (traffic sent to 0.0.0.0 or to ourselves), an IP
outside the network's subnet, or an IP or MAC another endpoint already holds (a neighbour entry
replaced: traffic hijacked). The agent programs only what `admit_endpoints` admits.

Conflicts are settled by the store's order: the first writer (lowest mod_revision, then key)
keeps the address and later claimants are rejected, so every agent, reading the same store,
admits the same set.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Iterable, Mapping

from .records import EndpointRecord, HostRecord, NetworkRecord

log = logging.getLogger(__name__)

Candidate = tuple[str, int, EndpointRecord]      # (key, mod_revision, record)
Rejected = tuple[str, str]                       # (key, reason)

_LOGGED_MAX = 4096
_logged: set[tuple[str, str]] = set()


def _log_once(key: str, reason: str) -> None:
    """Admission runs on every store change: say each rejection once, not on every pass."""
    if (key, reason) in _logged:
        return
    if len(_logged) >= _LOGGED_MAX:
        _logged.clear()
    _logged.add((key, reason))
    log.warning("not programming %s: %s", key, reason)


def _in_order(candidates: Iterable[tuple[str, int, object]]) -> list:
    # Sorting input that the mirror already keeps in revision order costs O(n).
    return sorted(candidates, key=lambda c: (c[1], c[0]))


@functools.lru_cache(maxsize=256)
def _subnet(subnet: str, gateway: str) -> _Subnet:
    """Admission runs on every change of a network: its subnet is parsed once."""
    return _Subnet(subnet, gateway)


class _Subnet:
    """What an endpoint's IP may be: in the subnet, not its network, broadcast or gateway."""

    def __init__(self, subnet: str, gateway: str) -> None:
        self.net = ipaddress.IPv4Network(subnet)
        reserved = {self.net.network_address, self.net.broadcast_address}
        if self.net.prefixlen >= 31:   # RFC 3021: /31 and /32 have no such addresses
            reserved = set()
        self.reserved = reserved | {ipaddress.IPv4Address(gateway)}
        self._seen: dict[str, str | None] = {}     # ip as written -> its problem

    def check(self, ip: str) -> str | None:
        """problem() of an address as a record spells it, each spelling parsed once (every
        change of a network re-admits all its endpoints)."""
        if ip not in self._seen:
            if len(self._seen) >= 1 << 16:
                self._seen.clear()
            try:
                self._seen[ip] = self.problem(ipaddress.IPv4Address(ip))
            except ValueError:
                self._seen[ip] = f"bad ip {ip!r}"
        return self._seen[ip]

    def problem(self, ip: ipaddress.IPv4Address) -> str | None:
        if ip not in self.net:
            return f"ip {ip} is outside the network's subnet {self.net}"
        if ip in self.reserved:
            return f"ip {ip} is the network, broadcast or gateway address of {self.net}"
        return None


NOT_A_MEMBER = "host {!r} is not on the network (no record of it there)"


def _host_problem(ep: EndpointRecord, hosts: Mapping[str, HostRecord]) -> str | None:
    host = hosts.get(ep.host)
    if host is None:
        return NOT_A_MEMBER.format(ep.host)
    if host.address != ep.host_address:
        return (f"VTEP {ep.host_address} is not the address of host {ep.host!r} "
                f"({host.address})")
    return None


def admit_endpoints(network: NetworkRecord, candidates: list[Candidate],
                    hosts: Mapping[str, HostRecord]
                    ) -> tuple[list[EndpointRecord], list[Rejected]]:
    """Split `candidates` (all endpoint records of `network`) into the ones
    the kernel may hold and the rejected ones with a reason. `hosts`: the network's host
    records by name (its members, agent/membership.py). Deterministic, O(n log n) at worst
    and O(n) for input already in revision order.

    For a bridge (flannel) network pass a record whose subnet is the cluster's whole flannel
    network: each host's bridge subnet is only part of it."""
    subnet = _subnet(network.subnet, network.gateway)
    admitted: list[EndpointRecord] = []
    rejected: list[Rejected] = []
    ip_owner: dict[str, str] = {}
    mac_owner: dict[str, str] = {}
    for key, _, ep in _in_order(candidates):
        reason = _endpoint_problem(network.id, subnet, ep, hosts)
        if reason is None and ep.ip in ip_owner:
            reason = f"ip {ep.ip} is already held by {ip_owner[ep.ip]}"
        if reason is None and ep.mac in mac_owner:
            reason = f"MAC {ep.mac} is already held by {mac_owner[ep.mac]}"
        if reason is not None:
            if reason != NOT_A_MEMBER.format(ep.host):
                _log_once(key, reason)
            # else most likely its host's membership is on its way (another watch): if it
            # does not come, the agent says so (agent/membership.py, adopt)
            rejected.append((key, reason))
            continue
        ip_owner[ep.ip] = key
        mac_owner[ep.mac] = key
        admitted.append(ep)
    return admitted, rejected


def _endpoint_problem(net_id: str, subnet: _Subnet, ep: EndpointRecord,
                      hosts: Mapping[str, HostRecord]) -> str | None:
    if ep.network != net_id:
        return f"record names network {ep.network}, not {net_id}"
    return subnet.check(ep.ip) or _host_problem(ep, hosts)


def admit_hosts(candidates: list[tuple[str, int, HostRecord]]
                ) -> tuple[dict[str, HostRecord], list[Rejected]]:
    """Host records (key, mod_revision, record) -> the ones to trust, by name. A record
    must sit under its own name, and an underlay address belongs to one host only (the first
    writer): another host record claiming it would draw its endpoints' traffic."""
    admitted: dict[str, HostRecord] = {}
    rejected: list[Rejected] = []
    owner: dict[str, str] = {}
    for key, _, host in _in_order(candidates):
        reason = None
        if key.rpartition("/")[2] != host.name:
            reason = f"record names host {host.name!r}, not its key's"
        elif host.address in owner:
            reason = f"address {host.address} is already host {owner[host.address]!r}'s"
        if reason is not None:
            _log_once(key, reason)
            rejected.append((key, reason))
            continue
        owner[host.address] = host.name
        admitted[host.name] = host
    return admitted, rejected
