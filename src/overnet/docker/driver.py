"""NetworkDriver.*: Docker's endpoints, attached through the agent's endpoint service.

libnetwork creates no interface for a remote driver: Join must name a device in the host
namespace (SrcName), which Docker then moves into the container and renames (DstPrefix + N)
and addresses itself. So Join attaches with a *hand-over*: the container's macvlan of the
network's vxlan0, as any container gets, waits in the host namespace, already sized and with
its MAC; the endpoint record is published at once, so peers are programmed and DNS names it.
Leave changes nothing (Docker moves the device back to the host namespace itself);
DeleteEndpoint detaches, which removes it there (a device still in a sandbox goes with it).

Docker sends no container name. The endpoint is published under its ID's first 12
characters at Join; once dockerd lists the container on the network (it does when the container
has started), the record is renamed to the container's name, with its Docker aliases (among
them the short container ID) and the endpoint's short ID as aliases. `docker network connect
--driver-opt overnet.name=NAME` picks the name instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from dataclasses import dataclass

from ..agent.endpoints import AttachRequest
from ..agent.networks import NAME_RE
from ..errors import Invalid, NotFound
from ..ipam import pools
from .bindings import OPTION, Bindings, is_placeholder

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[0-9a-f]{64}$")
GENERIC = "com.docker.network.generic"
NAME_OPTION = "overnet.name"
IFNAME = "eth0"          # what Docker names the first interface (DstPrefix "eth" + 0)
NAME_WAIT = 10.0         # how long to wait for dockerd to store a new network
START_WAIT = 120.0       # ... and to list a started container on its network


@dataclass
class Pending:
    """An endpoint between CreateEndpoint and Join."""
    network: str         # overnet network id
    ip: str
    mac: str
    name: str = ""


class NetworkDriver:
    def __init__(self, agent, bindings: Bindings) -> None:
        self.agent = agent
        self.bindings = bindings
        self.pending: dict[str, Pending] = {}
        self._tasks: set[asyncio.Task] = set()

    async def capabilities(self, body: dict) -> dict:
        return {"Scope": "local", "ConnectivityScope": "global"}

    # --- networks ------------------------------------------------------------------------

    async def create_network(self, body: dict) -> dict:
        docker_net = _id(body, "NetworkID")
        if body.get("IPv6Data"):
            raise Invalid("invalid IPv6Data: overnet networks are IPv4 only (drop --ipv6)")
        generic = (body.get("Options") or {}).get(GENERIC) or {}
        if not isinstance(generic, dict):
            raise Invalid(f"invalid {GENERIC} {generic!r}: expected an object")
        name = generic.get(OPTION) or None
        data = body.get("IPv4Data") or []
        pool = data[0].get("Pool", "") if len(data) == 1 and isinstance(data[0], dict) else ""
        if not is_placeholder(pool):
            nets = self.agent.networks
            known = {n.subnet: n.name for n in nets.all() if nets.driver(n).scope == "global"}
            if pool not in known:
                raise Invalid(f"invalid pool {pool or data!r}: use --ipam-driver overnet with "
                              "-d overnet (addresses come from the overnet network)")
            if name and known[pool] != name:
                raise Invalid(f"invalid -o {OPTION}={name}: the IPAM pool {pool} belongs to "
                              f"overnet network {known[pool]}")
            name = name or known[pool]
        self.bindings.bind(docker_net, name, pool)
        if name:
            await self.bindings.ensure(name)
        else:    # dockerd stores the network (and its name) once we answer
            self._spawn(self._ensure_later(docker_net))
        return {}

    async def _ensure_later(self, docker_net: str) -> None:
        deadline = asyncio.get_running_loop().time() + NAME_WAIT
        while True:
            await asyncio.sleep(0.2)
            try:
                net = await self.bindings.network(docker_net)
                log.info("Docker network %s is overnet network %s", docker_net[:12], net.name)
                return
            except NotFound as e:
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("Docker network %s: %s", docker_net[:12], e)
                    return
            except Exception as e:  # noqa: BLE001 - the first endpoint will report it
                log.warning("Docker network %s: %s", docker_net[:12], e)
                return

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def delete_network(self, body: dict) -> dict:
        """This host's Docker network only: the overnet network is cluster-wide and stays."""
        self.bindings.forget(_id(body, "NetworkID"))
        return {}

    # --- endpoints -----------------------------------------------------------------------

    async def create_endpoint(self, body: dict) -> dict:
        docker_net, ep_id = _id(body, "NetworkID"), _id(body, "EndpointID")
        iface = body.get("Interface") or {}
        if iface.get("AddressIPv6"):
            raise Invalid(f"invalid AddressIPv6 {iface['AddressIPv6']!r}: IPv4 only")
        net = await self.bindings.network(docker_net)
        try:
            addr = ipaddress.IPv4Interface(iface.get("Address") or "")
        except ValueError:
            raise Invalid(f"invalid Interface.Address {iface.get('Address')!r}: use "
                          "--ipam-driver overnet with -d overnet") from None
        if addr.ip not in net.network:
            raise Invalid(f"invalid Interface.Address {addr}: not in overnet network "
                          f"{net.name} ({net.subnet}); use --ipam-driver overnet")
        mac = (iface.get("MacAddress") or pools.mac_for(addr.ip)).lower()
        name = str((body.get("Options") or {}).get(NAME_OPTION) or "")
        if name and not NAME_RE.match(name):
            raise Invalid(f"invalid {NAME_OPTION} {name!r}: use 1-63 letters, digits, '_' or "
                          "'-', starting with a letter or digit")
        self.pending[ep_id] = Pending(net.id, str(addr.ip), mac, name)
        return {"Interface": {} if iface.get("MacAddress") else {"MacAddress": mac}}

    async def endpoint_oper_info(self, body: dict) -> dict:
        ep_id = _id(body, "EndpointID")
        ep = self.agent.endpoints.find(ep_id, IFNAME)
        if ep is None:
            return {"Value": {"state": "created" if ep_id in self.pending else "unknown"}}
        return {"Value": {"network": ep.network_name, "ip": f"{ep.ip}/{ep.prefixlen}",
                          "mac": ep.mac, "host_ifname": ep.host_ifname, "phase": ep.phase,
                          "host": self.agent.name}}

    async def delete_endpoint(self, body: dict) -> dict:
        ep_id = _id(body, "EndpointID")
        pending = self.pending.pop(ep_id, None)
        await self.agent.endpoints.detach(ep_id, IFNAME)
        if pending is not None:   # never joined: its address is still held
            self.agent.endpoints.unhold(pending.network, pending.ip)
        return {}

    async def join(self, body: dict) -> dict:
        ep_id, sandbox = _id(body, "EndpointID"), body.get("SandboxKey") or ""
        _id(body, "NetworkID")
        ep = self.agent.endpoints.find(ep_id, IFNAME)
        if ep is None:
            p = self.pending.get(ep_id)
            if p is None:
                raise NotFound(f"unknown EndpointID {ep_id[:12]}: it was not created through "
                               f"this agent (recreate the container)")
            ep = await self.agent.endpoints.attach(AttachRequest(
                network=p.network, container_id=ep_id, netns=sandbox, ifname=IFNAME,
                name=p.name, ip=p.ip, mac=p.mac, runtime="docker", held=True,
                handover=handover_name(ep_id)))
            self.pending.pop(ep_id, None)
            if not p.name:
                self._spawn(self._learn_name(body["NetworkID"], ep_id))
        return {"InterfaceName": {"SrcName": handover_name(ep_id), "DstPrefix": "eth"},
                "Gateway": ep.gateway, "StaticRoutes": [], "DisableGatewayService": True}

    async def _learn_name(self, docker_net: str, ep_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_WAIT
        while loop.time() < deadline and self.agent.endpoints.find(ep_id, IFNAME):
            await asyncio.sleep(0.3)
            try:
                names = await self._docker_names(docker_net, ep_id)
                if names is None:
                    continue
                if names:
                    await self.agent.endpoints.rename(ep_id, IFNAME, names[0],
                                                      names[1:] + [ep_id[:12]])
                    log.info("endpoint %s is container %s", ep_id[:12], names[0])
                return
            except Exception as e:  # noqa: BLE001 - the endpoint keeps its first name
                log.warning("endpoint %s keeps the name %s: %s", ep_id[:12], ep_id[:12], e)
                return

    async def _docker_names(self, docker_net: str, ep_id: str) -> list[str] | None:
        """[container name, aliases...] (those that are DNS labels: maybe none), or None
        while dockerd does not list the endpoint's container yet."""
        docker = self.bindings.docker
        net = await docker.network(docker_net) or {}
        cid = next((c for c, v in (net.get("Containers") or {}).items()
                    if v.get("EndpointID") == ep_id), None)
        info = await docker.container(cid) if cid else None
        if not info:
            return None
        settings = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(
            net.get("Name"), {})
        labels = [info.get("Name", "").lstrip("/")] + list(settings.get("Aliases") or [])
        return list(dict.fromkeys(a for a in labels if NAME_RE.match(a or "")))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def leave(self, body: dict) -> dict:
        _id(body, "NetworkID")
        _id(body, "EndpointID")
        return {}    # Docker moves the device back to the host; DeleteEndpoint removes it

    async def nothing(self, body: dict) -> dict:
        """Discover*, Program/RevokeExternalConnectivity: overnet has its own discovery and
        publishes no ports."""
        return {}


def handover_name(ep_id: str) -> str:
    return "ovd" + ep_id[:12]


def _id(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not ID_RE.match(value):
        raise Invalid(f"invalid {field} {value!r}: expected 64 hex digits")
    return value
