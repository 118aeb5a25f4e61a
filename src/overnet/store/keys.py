"""The whole key schema of the cluster store, in one place.

    /overnet/v1/networks/<net-id>            NetworkRecord
    /overnet/v1/names/<net-name>             NameClaim     (name -> id, unique cluster-wide)
    /overnet/v1/vnis/<vni>                   VniClaim      (vni -> network id)
    /overnet/v1/pools/<a.b.c.d-len>          PoolClaim     (default pools handed to networks)
    /overnet/v1/hosts/<host>                 HostRecord    (durable: the host's address)
    /overnet/v1/alive/<host>                 HostRecord    (under the host's liveness lease)
    /overnet/v1/blocks/<net-id>/<a.b.c.d-len> BlockRecord  (address block owned by a host)
    /overnet/v1/endpoints/<net-id>/<a.b.c.d> EndpointRecord (keyed by its address: unique)
    /overnet/v1/services/<net-id>/<name>     ServiceRecord (name unique within a network)

Flannel's layout (host subnets) lives under its own prefix, see `flannel_*` below.
"""

from __future__ import annotations

import ipaddress

ROOT = "/overnet/v1/"
NETWORKS = ROOT + "networks/"
NAMES = ROOT + "names/"
VNIS = ROOT + "vnis/"
POOLS = ROOT + "pools/"
HOSTS = ROOT + "hosts/"
ALIVE = ROOT + "alive/"
BLOCKS = ROOT + "blocks/"
ENDPOINTS = ROOT + "endpoints/"
SERVICES = ROOT + "services/"

FLANNEL_PREFIX = "/coreos.com/network"


def cidr_key(cidr: ipaddress.IPv4Network | str) -> str:
    """10.1.5.0/24 -> 10.1.5.0-24 (flannel's spelling; no slash inside a key segment)."""
    net = ipaddress.IPv4Network(cidr)
    return f"{net.network_address}-{net.prefixlen}"


def parse_cidr_key(segment: str) -> ipaddress.IPv4Network:
    addr, _, length = segment.rpartition("-")
    return ipaddress.IPv4Network(f"{addr}/{length}")


def network(net_id: str) -> str:
    return NETWORKS + net_id


def name(net_name: str) -> str:
    return NAMES + net_name


def vni(number: int) -> str:
    return f"{VNIS}{number}"


def pool(cidr: ipaddress.IPv4Network | str) -> str:
    return POOLS + cidr_key(cidr)


def host(host_name: str) -> str:
    return HOSTS + host_name


def alive(host_name: str) -> str:
    return ALIVE + host_name


def blocks(net_id: str) -> str:
    return f"{BLOCKS}{net_id}/"


def block(net_id: str, cidr: ipaddress.IPv4Network | str) -> str:
    return blocks(net_id) + cidr_key(cidr)


def endpoints(net_id: str) -> str:
    return f"{ENDPOINTS}{net_id}/"


def endpoint(net_id: str, ip: str) -> str:
    return endpoints(net_id) + ip


def services(net_id: str) -> str:
    return f"{SERVICES}{net_id}/"


def service(net_id: str, svc_name: str) -> str:
    return services(net_id) + svc_name


def split(key: str) -> tuple[str, ...]:
    """'/overnet/v1/endpoints/N/E' -> ('endpoints', 'N', 'E')."""
    if not key.startswith(ROOT):
        raise ValueError(f"not an overnet key: {key!r}")
    return tuple(key[len(ROOT):].split("/"))


# --- flannel's layout -------------------------------------------------------------------

def flannel_config(prefix: str = FLANNEL_PREFIX) -> str:
    return prefix.rstrip("/") + "/config"


def flannel_subnets(prefix: str = FLANNEL_PREFIX) -> str:
    return prefix.rstrip("/") + "/subnets/"


def flannel_subnet(subnet: ipaddress.IPv4Network | str, prefix: str = FLANNEL_PREFIX) -> str:
    return flannel_subnets(prefix) + cidr_key(subnet)
