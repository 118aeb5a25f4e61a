"""Per-network DNS: the name table, the resolver, every network's resolvers, resolv.conf.

How the agent uses it, on its event loop:

    resolvers = Resolvers(host_upstreams())                 # once, at start
    # whenever its copy of the store changes, for the networks with endpoints on this host:
    errors = await resolvers.sync({net.id: ResolverSpec(
        address=net.gateway, netns_path=net_ns_path,
        table=NameTable.build(net.name, "overnet", entries, subnet=net.subnet))})
    # a container's /etc/resolv.conf:
    resolv_conf(net.gateway, [f"{net.name}.overnet"], ["ndots:0"])
    await resolvers.close()                                 # at stop

A resolver's listening sockets hold its network namespace: sync (or remove) before deleting
the namespace, or it lives on until the resolver stops.
"""

from overnet.dns.resolvconf import (
    host_upstreams,
    parse_upstream,
    resolv_conf,
    upstreams_from_resolv_conf,
)
from typing import Any

from overnet.dns.resolvers import Resolvers, ResolverSpec
from overnet.dns.table import Entry, NameTable

__all__ = ["DnsServer", "Entry", "NameTable", "ResolverSpec", "Resolvers", "host_upstreams",
           "parse_upstream", "resolv_conf", "upstreams_from_resolv_conf"]


def __getattr__(name: str) -> Any:
    # DnsServer loads dnspython: only an agent that serves a network's names needs it.
    if name == "DnsServer":
        from overnet.dns.server import DnsServer
        return DnsServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
