"""The agent's configuration and what it knows of its own host."""

from __future__ import annotations

from dataclasses import dataclass

from ..ipam import pools
from ..store import keys

DOMAIN = "overnet"            # the cluster's DNS domain: web.foobar.overnet


@dataclass
class AgentConfig:
    store: str
    name: str
    advertise: str
    socket: str = "/run/overnet/overnet.sock"
    state_dir: str = "/run/overnet"
    default_network: str | None = None        # "DRIVER:NAME", e.g. "overlay:multihost"
    default_range: str = pools.DEFAULT_RANGE
    pool_prefix: int = pools.DEFAULT_POOL_PREFIX
    bridge_subnet: str = "172.17.0.0/16"
    vxlan_port: int = 4789
    host_ttl: int = 10                         # seconds: liveness lease
    # Records of a host whose agent stopped renewing are collected only after this long:
    # an agent that is down (restarting, upgrading, cut off from the store) is not a dead host.
    gc_grace: float = 3600.0
    block_grace: float = 86400.0               # a dead host's address blocks: kept a day
    resync_every: float = 10.0                 # level-triggered re-check of the kernel
    start_expiry: float = 120.0                # a created container never started is removed
    # host subnets (flannel-compatible), see agent/hostsubnet.py
    flannel: bool = False                      # also on when flannel_network is given
    subnet_prefix: str = keys.FLANNEL_PREFIX
    subnet_file: str = "/run/flannel/subnet.env"
    ip_masq: bool = False
    flannel_network: str | None = None         # write this config if the store has none
    flannel_backend: str = "vxlan"
    dns: bool = True

    @property
    def host_subnets(self) -> bool:
        return self.flannel or bool(self.flannel_network)
