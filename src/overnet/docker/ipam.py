"""IpamDriver.*: Docker asks for pools and addresses; the agent's endpoint service gives them.

An address Docker asks for is *held* (EndpointService.hold_address): taken from this host's
blocks of the overnet network, so no other host and no other runtime on this host can hand it
out, until Join attaches the endpoint with it or ReleaseAddress gives it back.
"""

from __future__ import annotations

import ipaddress

from ..errors import Invalid, NotFound
from .bindings import NAMED, OPTION, PENDING, Bindings, is_placeholder

LOCAL_SPACE, GLOBAL_SPACE = "overnet", "overnet-global"
GATEWAY = "com.docker.network.gateway"      # Options.RequestAddressType of the gateway


class Ipam:
    def __init__(self, agent, bindings: Bindings) -> None:
        self.agent = agent
        self.bindings = bindings

    async def capabilities(self, body: dict) -> dict:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    async def default_address_spaces(self, body: dict) -> dict:
        return {"LocalDefaultAddressSpace": LOCAL_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_SPACE}

    async def request_pool(self, body: dict) -> dict:
        if body.get("V6"):
            raise Invalid("invalid V6 true: overnet networks are IPv4 only (drop --ipv6)")
        if body.get("SubPool"):
            raise Invalid(f"invalid SubPool {body['SubPool']!r}: overnet gives addresses from "
                          "the whole network (drop --ip-range)")
        name, pool = _options(body).get(OPTION), body.get("Pool") or ""
        if name:
            net = await self.bindings.ensure(name)
            if pool and pool != net.subnet:
                raise Invalid(f"invalid Pool {pool!r}: overnet network {name} has subnet "
                              f"{net.subnet}")
            return {"PoolID": NAMED + name, "Pool": net.subnet, "Data": {OPTION: name}}
        if pool and not is_placeholder(pool):
            net = next((n for n in self.agent.networks.all()
                        if n.subnet == pool and n.driver == "overlay"), None)
            if net is None:
                raise Invalid(f"invalid Pool {pool!r}: no overnet network has that subnet "
                              f"(overnet picks subnets: name the network with --ipam-opt "
                              f"{OPTION}=NAME instead of --subnet)")
            return {"PoolID": NAMED + net.name, "Pool": net.subnet, "Data": {OPTION: net.name}}
        pool = pool or await self.bindings.new_placeholder()   # given: asked again after
        return {"PoolID": PENDING + pool, "Pool": pool, "Data": {}}   # a dockerd restart

    async def release_pool(self, body: dict) -> dict:
        pool_id = body.get("PoolID") or ""
        self.bindings.placeholders.discard(pool_id[len(PENDING):])
        return {}

    async def request_address(self, body: dict) -> dict:
        pool_id, addr = body.get("PoolID") or "", body.get("Address") or ""
        if _options(body).get("RequestAddressType") == GATEWAY:
            return {"Address": await self._gateway(pool_id, addr), "Data": {}}
        net = await self.bindings.pool_network(pool_id)
        plen = net.network.prefixlen
        if addr and self._attached(net.id, addr):   # asked again (dockerd restarted)
            return {"Address": f"{addr}/{plen}", "Data": {}}
        _, ip = await self.agent.endpoints.hold_address(net.id, addr or None)
        return {"Address": f"{ip}/{plen}", "Data": {}}

    async def _gateway(self, pool_id: str, addr: str) -> str:
        if pool_id.startswith(PENDING) and is_placeholder(pool_id[len(PENDING):]):
            pool = ipaddress.IPv4Network(pool_id[len(PENDING):])
            return f"{pool.network_address + 1}/{pool.prefixlen}"
        net = await self.bindings.pool_network(pool_id)
        if addr and addr != net.gateway:
            raise Invalid(f"invalid gateway {addr!r}: overnet network {net.name} has gateway "
                          f"{net.gateway}")
        return f"{net.gateway}/{net.network.prefixlen}"

    def _attached(self, net_id: str, ip: str) -> bool:
        return any(ep.ip == ip and ep.runtime == "docker"
                   for ep in self.agent.endpoints.on_network(net_id))

    async def release_address(self, body: dict) -> dict:
        pool_id, addr = body.get("PoolID") or "", body.get("Address") or ""
        if pool_id.startswith(PENDING) and is_placeholder(addr + "/32"):
            return {}    # a placeholder gateway: nothing was held
        try:
            net = await self.bindings.pool_network(pool_id)
        except NotFound:
            return {}    # its network is gone, and with it anything held
        self.agent.endpoints.unhold(net.id, addr)
        return {}


def _options(body: dict) -> dict:
    opts = body.get("Options") or {}
    if not isinstance(opts, dict):
        raise Invalid(f"invalid Options {opts!r}: expected an object")
    return opts
