"""DNS for every runtime's containers: on this host, one resolver per network that has local
endpoints and lists its names (the driver's `discovery`), on the network's gateway address
inside the network's namespace, answering from the agent's copy of the store."""

from __future__ import annotations

import logging

from ..dns import Entry, NameTable, Resolvers, ResolverSpec, host_upstreams, resolv_conf
from ..store import keys
from ..store.records import NetworkRecord
from .config import DOMAIN
from .networks import NetworkService
from .view import ClusterView

log = logging.getLogger(__name__)


class NetworkDns:
    def __init__(self, view: ClusterView, networks: NetworkService,
                 upstreams: list[str] | None = None, port: int = 53) -> None:
        self.view = view
        self.networks = networks
        self.resolvers = Resolvers(host_upstreams() if upstreams is None else upstreams,
                                   port=port)
        self._tables: dict[str, tuple[tuple, NameTable]] = {}

    def table(self, net: NetworkRecord) -> NameTable:
        """The network's names, built again (a new table: the resolver caches answers per
        table object) whenever what they come from changed: the network, its endpoints and
        services, the host records that admit its endpoints. Not per store revision: one
        write of an endpoint and its service reaches the copy on two watches, and a pass
        between the two built the revision's table without the endpoint, for good."""
        m = self.view.mirror
        stamp = (net, m.generation(keys.endpoints(net.id)), m.generation(keys.services(net.id)),
                 m.generation(keys.members(net.id)))
        cached = self._tables.get(net.id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        entries = [Entry(ep.name, ep.ip, tuple(ep.aliases))
                   for ep in self.view.endpoints(net.id)]
        by_ip = {ep.ip for ep in self.view.endpoints(net.id)}
        for svc in self.view.services(net.id):      # service names that differ from names
            ep = next((e for e in self.view.endpoints(net.id) if e.id == svc.endpoint), None)
            if ep is not None and ep.ip in by_ip and svc.name != ep.name:
                entries.append(Entry(svc.name, ep.ip, ()))
        table = NameTable.build(net.name, DOMAIN, entries, subnet=net.subnet)
        self._tables[net.id] = (stamp, table)
        return table

    def serves(self, net: NetworkRecord) -> bool:
        driver = self.networks.driver(net)
        return driver.discovery and bool(driver.namespace(net)) and bool(net.gateway)

    async def update(self, net: NetworkRecord, active: bool) -> None:
        """Start, refresh or stop the network's resolver (stop it before the network's
        namespace goes: its sockets would keep the namespace alive)."""
        if not active or not self.serves(net):
            if await self.resolvers.remove(net.id):
                self._tables.pop(net.id, None)
            return
        spec = ResolverSpec(address=net.gateway, netns_path=self.networks.driver(net)
                            .namespace(net), table=self.table(net))
        try:
            await self.resolvers.ensure(net.id, spec)
        except Exception as e:  # noqa: BLE001 - names still work through /etc/hosts
            log.warning("network %s: DNS resolver on %s not started: %s", net.name,
                        net.gateway, e)

    def resolv_conf(self, net: NetworkRecord) -> str | None:
        """A container's /etc/resolv.conf on this network, or None (the host's)."""
        if not self.serves(net):
            return None
        return resolv_conf(net.gateway, [f"{net.name}.{DOMAIN}"], [])

    def stats(self) -> dict[str, dict[str, int]]:
        return self.resolvers.stats()

    async def close(self) -> None:
        await self.resolvers.close()
