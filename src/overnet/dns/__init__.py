"""Per-network DNS: the name table, the resolver, every network's resolvers, resolv.conf."""

from overnet.dns.resolvconf import (
    host_upstreams,
    parse_upstream,
    resolv_conf,
    upstreams_from_resolv_conf,
)
from overnet.dns.resolvers import Resolvers, ResolverSpec
from overnet.dns.server import DnsServer
from overnet.dns.table import Entry, NameTable

__all__ = ["DnsServer", "Entry", "NameTable", "ResolverSpec", "Resolvers", "host_upstreams",
           "parse_upstream", "resolv_conf", "upstreams_from_resolv_conf"]
