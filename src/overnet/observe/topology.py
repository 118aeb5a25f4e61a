"""The cluster as it is, for `overnet graph`: hosts, networks, endpoints and the VXLAN
tunnels between the hosts that carry each network (read from the agent's copy of the
store and the store's host records, plus this host's endpoints on networks that are not
published)."""

from __future__ import annotations

import asyncio
from itertools import combinations
from typing import Any

from ..store import keys
from ..store.records import HostRecord, decode
from ..store.validate import admit_hosts


async def topology(agent: Any) -> dict[str, Any]:
    """Every network in scope first (the caller's `in_scope`); the hosts are read from the
    store here: no agent's copy holds every host (agent/membership.py)."""
    (records, _), (alive, _) = await asyncio.gather(agent.store.list(keys.HOSTS),
                                                    agent.store.list(keys.ALIVE))
    found = [(kv.key, kv.mod_revision, rec) for kv in records
             if (rec := decode(HostRecord, kv.key, kv.value)) is not None]
    up = {kv.key[len(keys.ALIVE):] for kv in alive}
    hosts = [{"name": h.name, "address": h.address, "mtu": h.mtu, "alive": h.name in up}
             for h in sorted(admit_hosts(found)[0].values(), key=lambda h: h.name)]
    networks, endpoints, tunnels = [], [], []
    for net in sorted(agent.networks.all(), key=lambda n: n.name):
        driver = agent.networks.driver(net)
        eps = _endpoints(agent, net, driver)
        if not eps and not driver.publishes:
            continue
        networks.append({"id": net.id, "name": net.name, "driver": net.driver,
                         "vni": net.vni or None, "subnet": net.subnet})
        endpoints += eps
        if driver.publishes and net.vni:
            on = sorted({e["host"] for e in eps})
            tunnels += [{"network": net.name, "vni": net.vni, "hosts": [a, b]}
                        for a, b in combinations(on, 2)]
    return {"hosts": hosts, "networks": networks, "endpoints": endpoints, "tunnels": tunnels,
            "seen_from": agent.name}


def _endpoints(agent: Any, net: Any, driver: Any) -> list[dict[str, Any]]:
    if driver.publishes:
        return [{"name": e.name, "container": e.container, "ip": e.ip, "host": e.host,
                 "network": net.name, "runtime": e.runtime or "overnet"}
                for e in agent.view.endpoints(net.id)]
    return [{"name": e.name or e.container_id[:12], "container": e.container_id, "ip": e.ip,
             "host": agent.name, "network": net.name, "runtime": e.runtime}
            for e in agent.endpoints.on_network(net.id)]
