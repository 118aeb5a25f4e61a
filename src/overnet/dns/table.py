"""The names one network's resolver answers for: a precomputed, immutable lookup table.

The agent builds a `NameTable` whenever the endpoints of a network change and hands the
resolver a cheap provider returning the current one, so a query never waits on the store.

Which names the resolver owns (and so answers NXDOMAIN for when unknown) and which it forwards:
- names under the cluster domain (`x.overnet`, `x.foobar.overnet`, `overnet` itself) are ours;
- reverse (PTR) names of addresses inside the network's subnet are ours;
- everything else, single-label names included, is forwarded. A container's resolver tries
  `x.foobar.overnet` first through the search list, so an unknown single label reaches us only
  after that failed, and then the upstream may know it (as Docker's embedded DNS does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field


def normalize(name: str) -> str:
    """A name as the table keys it: lower case, no trailing dot."""
    return name.rstrip(".").lower()


@dataclass(frozen=True)
class Entry:
    """One name-bearing endpoint: container or service name, aliases and --link aliases."""

    name: str
    ip: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class NameTable:
    network: str  # normalized network name
    domain: str  # normalized cluster domain, e.g. "overnet"
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    # Keyed by the bare names only: the three qualified spellings of each are found by
    # stripping their suffix at query time (an agent keeps a table per network with every
    # endpoint of the cluster: four keys per name cost ~0.4 KB more per endpoint).
    _names: dict[str, tuple[str, ...]] = field(repr=False)
    _ptr: dict[str, str] = field(repr=False)          # address -> bare name
    _parents: frozenset[str] = field(repr=False)

    @classmethod
    def build(cls, network_name: str, domain: str, entries: Iterable[Entry],
              subnet: str | None = None) -> NameTable:
        """The table of a network; raises ValueError naming a bad name, address or subnet.

        Every name and alias answers as `X`, `X.network`, `X.domain` and `X.network.domain`.
        A name shared by several entries (a service's tasks) answers with all their addresses,
        in the order given; the first entry holding an address gives its PTR name.
        """
        network, dom = _name_or_fail("network name", network_name), _name_or_fail("domain", domain)
        net = _subnet_or_fail(subnet) if subnet is not None else None
        names: dict[str, list[str]] = {}
        ptr: dict[str, str] = {}
        for entry in entries:
            ip = _ip_or_fail(entry)
            ptr.setdefault(ip, _name_or_fail("name", entry.name))
            for raw in (entry.name, *entry.aliases):
                ips = names.setdefault(_name_or_fail("alias", raw), [])
                if ip not in ips:
                    ips.append(ip)
        frozen = {k: tuple(v) for k, v in names.items()}
        parents = frozenset(_ancestors(frozen, network, dom)) | {dom, f"{network}.{dom}"}
        return cls(network=network, domain=dom, subnet=net, _names=frozen, _ptr=ptr,
                   _parents=parents)

    def _bare(self, name: str) -> list[str]:
        """The bare names `name` may spell: itself, and itself less one of the suffixes."""
        out = [name]
        for suffix in (f".{self.network}.{self.domain}", f".{self.domain}", f".{self.network}"):
            if name.endswith(suffix) and len(name) > len(suffix):
                out.append(name[:-len(suffix)])
        return out

    def addresses(self, qname: str) -> list[str] | None:
        """The addresses (IPv4 and IPv6, as given) of `qname`, or None if it is not known."""
        found: list[str] | None = None
        for bare in self._bare(normalize(qname)):
            ips = self._names.get(bare)
            if ips is not None:
                found = list(ips) if found is None else found + [i for i in ips
                                                                  if i not in found]
        return found

    def ptr(self, ip: str) -> str | None:
        """The canonical name `name.network.domain` of an address, or None if unknown."""
        try:
            key = str(ipaddress.ip_address(ip))
        except ValueError:
            return None
        name = self._ptr.get(key)
        return None if name is None else f"{name}.{self.network}.{self.domain}"

    def in_domain(self, qname: str) -> bool:
        """True if the name is the cluster domain or under it: unknown ones are NXDOMAIN."""
        name = normalize(qname)
        return name == self.domain or name.endswith("." + self.domain)

    def owns_address(self, ip: str) -> bool:
        """True if the address lies in the network's subnet: its unknown PTR is NXDOMAIN."""
        if self.subnet is None:
            return False
        try:
            return ipaddress.ip_address(ip) in self.subnet
        except ValueError:
            return False

    def is_parent(self, qname: str) -> bool:
        """True if the name exists only as an ancestor of names we hold (`overnet`,
        `foobar.overnet`): such a name has no records but is no NXDOMAIN either (RFC 8020)."""
        name = normalize(qname)
        return name in self._parents and self.addresses(name) is None


def _ancestors(names: Iterable[str], network: str, domain: str) -> Iterable[str]:
    # Every proper suffix under the domain of a name's qualified spellings (a dotted name
    # has more than the domain and the network's own).
    for name in names:
        if "." not in name:
            continue
        for full in (f"{name}.{domain}", f"{name}.{network}.{domain}"):
            while full.endswith("." + domain):
                full = full.split(".", 1)[1]
                yield full


def _name_or_fail(what: str, value: str) -> str:
    name = normalize(value)
    labels = name.split(".")
    if not name or any(not label or len(label) > 63 for label in labels) or len(name) > 253:
        raise ValueError(f"bad DNS {what} {value!r}: want dot-separated labels of 1-63 chars")
    return name


def _ip_or_fail(entry: Entry) -> str:
    """The entry's address in its canonical spelling (the entry's own string when it is)."""
    try:
        ip = str(ipaddress.ip_address(entry.ip))
    except ValueError:
        raise ValueError(f"bad address {entry.ip!r} for DNS name {entry.name!r}") from None
    return entry.ip if ip == entry.ip else ip


def _subnet_or_fail(subnet: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        raise ValueError(f"bad subnet {subnet!r} for the DNS table") from None
