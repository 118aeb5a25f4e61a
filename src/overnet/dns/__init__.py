"""Per-network DNS: the name table, the resolver, and resolv.conf helpers."""

from overnet.dns.resolvconf import parse_upstream, resolv_conf, upstreams_from_resolv_conf
from overnet.dns.server import DnsServer
from overnet.dns.table import Entry, NameTable

__all__ = ["DnsServer", "Entry", "NameTable", "parse_upstream", "resolv_conf",
           "upstreams_from_resolv_conf"]
