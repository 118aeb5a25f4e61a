"""The cluster as it is, for `overnet graph`: hosts, networks, endpoints and the VXLAN
tunnels between the hosts that carry each network (read from the agent's copy of the
store, plus this host's endpoints on networks that are not published)."""

from __future__ import annotations

from itertools import combinations
from typing import Any


def topology(agent: Any) -> dict[str, Any]:
    alive = agent.view.alive_hosts()
    hosts = [{"name": h.name, "address": h.address, "mtu": h.mtu, "alive": h.name in alive}
             for h in sorted(agent.view.hosts().values(), key=lambda h: h.name)]
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
