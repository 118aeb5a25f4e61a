"""Which overnet network a Docker network or an IPAM pool stands for.

Docker sends the IPAM driver's RequestPool before the network driver's CreateNetwork, and
names the network to neither. A pool is therefore one of two kinds, told apart by its PoolID:

    overnet:NAME        `--ipam-opt overnet.network=NAME` named it: the pool *is* NAME's subnet
    docker:169.254.X/28 a placeholder, unique on this host; the first address request finds the
                        Docker network holding it (dockerd's API), whose `-o overnet.network`
                        option or else its own name is the overnet network

Both forms carry everything needed, so nothing here must survive an agent restart: the maps
below are caches, refilled from dockerd when empty.
"""

from __future__ import annotations

import ipaddress
import logging
import random

from ..errors import Invalid, NotFound
from ..store.records import NetworkRecord
from .dockerapi import DockerApi, DockerApiError

log = logging.getLogger(__name__)

PLUGIN = "overnet"                       # the driver name Docker knows us by
OPTION = "overnet.network"               # -o / --ipam-opt: the overnet network to map to
NAMED, PENDING = "overnet:", "docker:"   # the two kinds of PoolID
PLACEHOLDERS = ipaddress.IPv4Network("169.254.0.0/16")
PLACEHOLDER_PREFIX = 28


def is_placeholder(cidr: str) -> bool:
    try:
        return ipaddress.IPv4Network(cidr).subnet_of(PLACEHOLDERS)
    except ValueError:
        return False


class Bindings:
    def __init__(self, agent, docker: DockerApi) -> None:
        self.agent = agent
        self.docker = docker
        self.names: dict[str, str] = {}        # Docker network id -> overnet network name
        self.pool_nets: dict[str, str] = {}    # placeholder pool -> Docker network id
        self.placeholders: set[str] = set()    # placeholder pools handed out by this run

    async def ensure(self, name: str) -> NetworkRecord:
        """The cluster-wide overlay network `name`, created if no host has made it yet."""
        net = await self.agent.networks.ensure(name, "overlay")
        if net.driver != "overlay":
            raise Invalid(f"invalid overnet network {name!r}: it is the host's {net.driver} "
                          "network; Docker networks map onto overlay networks only")
        return net

    def bind(self, docker_net: str, name: str | None, pool: str) -> None:
        if name:
            self.names[docker_net] = name
        if is_placeholder(pool):
            self.pool_nets[pool] = docker_net

    def forget(self, docker_net: str) -> None:
        self.names.pop(docker_net, None)
        for pool, net in list(self.pool_nets.items()):
            if net == docker_net:
                del self.pool_nets[pool]

    async def network(self, docker_net: str) -> NetworkRecord:
        """The overnet network of a Docker network (asking dockerd for its name once)."""
        name = self.names.get(docker_net)
        if name is None:
            info = await self._docker_network(docker_net)
            if info.get("Driver") != PLUGIN:
                raise Invalid(f"Docker network {info.get('Name')} has driver "
                              f"{info.get('Driver')!r}: the overnet IPAM driver serves only "
                              f"-d {PLUGIN} networks")
            name = (info.get("Options") or {}).get(OPTION) or info.get("Name") or ""
            self.names[docker_net] = name
        return await self.ensure(name)

    async def _docker_network(self, docker_net: str) -> dict:
        try:
            info = await self.docker.network(docker_net)
        except DockerApiError as e:
            raise NotFound(f"cannot learn the name of Docker network {docker_net[:12]}: {e}"
                           ) from None
        if info is None:
            raise NotFound(f"Docker network {docker_net[:12]} is unknown to dockerd at "
                           f"{self.docker.socket_path}")
        return info

    async def pool_network(self, pool_id: str) -> NetworkRecord:
        if pool_id.startswith(NAMED):
            return await self.ensure(pool_id[len(NAMED):])
        if pool_id.startswith(PENDING) and is_placeholder(pool_id[len(PENDING):]):
            pool = pool_id[len(PENDING):]
            docker_net = self.pool_nets.get(pool) or await self._holder_of(pool)
            return await self.network(docker_net)
        raise Invalid(f"invalid PoolID {pool_id!r}: not a pool of the overnet IPAM driver")

    async def _holder_of(self, pool: str) -> str:
        try:
            nets = await self.docker.networks()
        except DockerApiError as e:
            raise NotFound(f"cannot learn which Docker network holds pool {pool}: {e}") from None
        for n in nets:
            ipam = n.get("IPAM") or {}
            if ipam.get("Driver") == PLUGIN and \
                    any(c.get("Subnet") == pool for c in ipam.get("Config") or []):
                self.pool_nets[pool] = n["Id"]
                return n["Id"]
        raise NotFound(f"no Docker network holds pool {pool} (yet)")

    async def new_placeholder(self) -> str:
        """A placeholder pool no Docker network of this host holds."""
        taken = set(self.placeholders) | set(self.pool_nets)
        try:
            for n in await self.docker.networks():
                taken |= {c.get("Subnet") for c in (n.get("IPAM") or {}).get("Config") or []}
        except DockerApiError as e:
            log.warning("placeholder pool chosen without dockerd's list: %s", e)
        pools = list(PLACEHOLDERS.subnets(new_prefix=PLACEHOLDER_PREFIX))
        for pool in random.sample(pools, len(pools)):
            if str(pool) not in taken:
                self.placeholders.add(str(pool))
                return str(pool)
        raise Invalid(f"every placeholder pool of {PLACEHOLDERS} is in use on this host")
