"""What the endpoint service does after a crash or a store outage (a part of EndpointService,
kept apart so that attach and detach read on their own): load the journal, roll back what a
crash left half-made, publish again what a long outage collected, delete what the store
could not take when it was due, and remove records of ours that nothing backs."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Awaitable, Callable

from ..store import keys
from ..store.base import Absent, Delete, Put, ValueIs
from ..drivers import Attachment
from ..store.records import NetworkRecord
from .state import ATTACHED, ATTACHING, CONFLICT, LocalEndpoint

if TYPE_CHECKING:
    from .endpoints import EndpointService

log = logging.getLogger(__name__)


class Recovery:
    async def settle_owed(self: EndpointService) -> None:
        """Delete what earlier detaches could not (raises StoreError while it cannot)."""
        for name, key, value in self.state.owed_deletions():
            await self.store.txn([ValueIs(key, value)], [Delete(key)])
            self.state.settle_deletion(name)

    async def sweep(self: EndpointService) -> int:
        """Delete this host's records that no local endpoint backs: a transaction whose
        answer was lost (the store paused, the agent timed out and rolled back, then the
        store applied it after all), a network left while the store was away. Safe against
        attaches in flight: an endpoint is in `local` before its records are written."""
        ours = {ep.id for ep in self.local.values()}
        stray = []
        for key in self.view.keys_under(keys.ENDPOINTS) + self.view.keys_under(keys.SERVICES):
            rec = self.view.record_at(key)
            owner = getattr(rec, "endpoint", None) or getattr(rec, "id", None)
            if rec is not None and rec.host == self.host.name and owner not in ours:
                stray.append((key, self.view.items[key].value))
        for key, value in stray:
            log.warning("removing %s: no endpoint of this host backs it", key)
            await self.store.txn([ValueIs(key, value)], [Delete(key)])
        left = [n for n in self.membership.strays() if await self.membership.leave(n)]
        return len(stray) + len(left)

    # --- check and gc --------------------------------------------------------------------


    def load(self: EndpointService) -> list[LocalEndpoint]:
        for ep in self.state.load_endpoints():
            self.local[ep.ref] = ep
        return list(self.local.values())

    async def recover(self: EndpointService,
                      alive: Callable[[LocalEndpoint], Awaitable[bool]]) -> None:
        """Roll back half-made endpoints and those whose container is gone; re-publish the
        records of the others (a long outage may have collected them). Runs with every
        endpoint loaded, so no teardown ever sees a network emptier than it is."""
        for ep in list(self.local.values()):
            if ep.phase == ATTACHING or not await alive(ep):
                log.info("endpoint %s of %s: %s, removing it", ep.ifname, ep.container_id[:12],
                         "half made" if ep.phase == ATTACHING else "its container is gone")
                net = self.networks.get(ep.network) or placeholder(ep)
                await self._teardown(net, ep)
        for ep in list(self.local.values()):
            net = self.networks.get(ep.network)
            if net is not None and ep.phase == ATTACHED and \
                    self.networks.driver(net).publishes:
                await self._republish(net, ep)

    async def _republish(self: EndpointService, net: NetworkRecord, ep: LocalEndpoint) -> None:
        key = keys.endpoint(net.id, ep.ip)
        item = self.view.items.get(key)
        if item is not None and item.value.decode(errors="replace") == ep.record:
            return
        if item is None:
            if self.networks.driver(net).scope == "global":
                await self.allocator.reclaim(net, ipaddress.IPv4Address(ep.ip))
            ops = [Put(key, ep.record.encode())]
            result = await self.membership.publish(net.id, [Absent(key)], ops)
            if result.succeeded:
                log.warning("re-published endpoint %s (%s) of %s: its record was gone",
                            ep.ip, net.name, ep.container_id[:12])
                await self.view.mirror.wait_for(key, result.revision)
                return
        # Someone else holds the address now: the earlier holder keeps it; ours gives up
        # its interface so that there are never two live holders of one address.
        log.error("ADDRESS CONFLICT: %s on network %s is now held by another endpoint; "
                  "container %s loses %s", ep.ip, net.name, ep.container_id[:12], ep.ifname)
        try:
            await self.networks.driver(net).detach(net, attachment(ep))
        finally:
            ep.phase = CONFLICT
            ep.record = ep.service_record = ""
            self.state.save_endpoint(ep)

def attachment(ep: LocalEndpoint) -> Attachment:
    return Attachment(ep.netns, ep.host_ifname, ep.ip, ep.prefixlen, ep.mac, ep.ifname,
                      ep.handover)


def placeholder(ep: LocalEndpoint) -> NetworkRecord:
    """A network record for an endpoint whose network is gone from the store."""
    subnet = str(ipaddress.IPv4Interface(f"{ep.ip}/{ep.prefixlen}").network) if ep.ip else ""
    return NetworkRecord(id=ep.network, name=ep.network_name, driver=ep.driver,
                         subnet=subnet, gateway=ep.gateway)
