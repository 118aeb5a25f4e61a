"""The whole key schema of the cluster store, in one place.

    /overnet/v1/networks/<net-id>            NetworkRecord
    /overnet/v1/names/<net-name>             NameClaim     (name -> id, unique cluster-wide)
    /overnet/v1/vnis/<vni>                   VniClaim      (vni -> network id)
    /overnet/v1/pools/<a.b.c.d-len>          PoolClaim     (default pools handed to networks)
    /overnet/v1/hosts/<host>                 HostRecord    (durable: the host's address)
    /overnet/v1/alive/<host>                 HostRecord    (under the host's liveness lease)
    /overnet/v1/members/<net-id>/<host>      HostRecord    (durable: a host on the network)
    /overnet/v1/present/<net-id>/<host>      HostRecord    (the same, under its liveness lease)
    /overnet/v1/blocks/<net-id>/<a.b.c.d-len> BlockRecord  (address block owned by a host)
    /overnet/v1/endpoints/<net-id>/<a.b.c.d> EndpointRecord (keyed by its address: unique)
    /overnet/v1/services/<net-id>/<name>     ServiceRecord (name unique within a network)
    /overnet/v1/doctor/<id>                  a `doctor` path request and its answers

An agent mirrors the cluster-wide kinds (GLOBAL, O(networks)) whole, and the per-network
kinds (PER_NETWORK: most of the store, O(containers)) only for the networks it needs
(store/scoped.py). A host's own records (`hosts/`, `alive/`) are written for whoever asks
about one host (its name, `doctor`, `graph`) and mirrored by no agent: each network has its
hosts' copies (`members/`, `present/`, written with the host's first endpoint on it), so a
host joining, leaving or re-registering reaches the hosts of its networks, not every host.

Flannel's layout (host subnets) lives under its own prefix, see `flannel_*` below.
"""

from __future__ import annotations

import ipaddress
import logging
import re

log = logging.getLogger(__name__)

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
MEMBERS = ROOT + "members/"
PRESENT = ROOT + "present/"
DOCTOR = ROOT + "doctor/"

GLOBAL = (DOCTOR, NETWORKS)      # what every agent mirrors whole
PER_NETWORK = (BLOCKS, ENDPOINTS, MEMBERS, PRESENT, SERVICES)    # each followed by <net-id>/

FLANNEL_PREFIX = "/coreos.com/network"


def cidr_key(cidr: ipaddress.IPv4Network | str) -> str:
    """10.1.5.0/24 -> 10.1.5.0-24 (flannel's spelling; no slash inside a key segment)."""
    net = ipaddress.IPv4Network(cidr)
    return f"{net.network_address}-{net.prefixlen}"


def parse_cidr_key(segment: str) -> ipaddress.IPv4Network:
    """Raises ValueError on a bad segment; readers of the store use `try_parse_cidr_key`."""
    addr, _, length = segment.rpartition("-")
    return ipaddress.IPv4Network(f"{addr}/{length}")


# Strict spellings: int() and IPv4Network() accept more (" 12", "1_0", "+5", "٣"), and a key
# the store holds must read back as the one value it was written for.
_CIDR_KEY = re.compile(r"([0-9]{1,3}\.){3}[0-9]{1,3}-[0-9]{1,2}", re.ASCII)
_VNI_KEY = re.compile(r"[1-9][0-9]{0,7}", re.ASCII)
MAX_VNI = (1 << 24) - 1
_LOGGED_MAX = 4096
_logged: set[str] = set()


def _log_bad_key(key: str, why: str) -> None:
    """Warn once per bad key: readers run on every store change and must not flood the log."""
    if key in _logged:
        return
    if len(_logged) >= _LOGGED_MAX:
        _logged.clear()
    _logged.add(key)
    log.warning("skipping bad store key %r: %s", key[:200], why)


def try_parse_cidr_key(segment: str) -> ipaddress.IPv4Network | None:
    """'10.1.5.0-24' -> 10.1.5.0/24; None (logged once) for anything else, host bits included."""
    if _CIDR_KEY.fullmatch(segment):
        try:
            net = parse_cidr_key(segment)
        except ValueError:
            net = None
        if net is not None and cidr_key(net) == segment:   # one spelling per network
            return net
    _log_bad_key(segment, "expected A.B.C.D-LEN (a network address and a prefix length)")
    return None


def parse_vni_key(key: str) -> int | None:
    """'/overnet/v1/vnis/256' (or '256') -> 256; None (logged once) unless a VNI 1..2^24-1."""
    segment = key.rpartition("/")[2]
    if _VNI_KEY.fullmatch(segment) and int(segment) <= MAX_VNI:
        return int(segment)
    _log_bad_key(key, f"expected a VNI from 1 to {MAX_VNI}")
    return None


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


def members(net_id: str) -> str:
    return f"{MEMBERS}{net_id}/"


def member(net_id: str, host_name: str) -> str:
    return members(net_id) + host_name


def present(net_id: str) -> str:
    return f"{PRESENT}{net_id}/"


def presence(net_id: str, host_name: str) -> str:
    return present(net_id) + host_name


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
