"""The cluster network config, in flannel's JSON and with flannel's validation rules.

    {"Network": "10.1.0.0/16", "SubnetLen": 24, "SubnetMin": "10.1.1.0",
     "SubnetMax": "10.1.255.0", "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}

Pure: no store, no kernel. `parse` accepts what flanneld accepts (and fills in the same
defaults); `to_json` writes what flanneld reads.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from ..dataplane.model import VXLAN_OVERHEAD

VXLAN = "vxlan"
HOST_GW = "host-gw"
BACKENDS = (VXLAN, HOST_GW)
DEFAULT_VNI = 1
DEFAULT_PORT = 8472      # flannel's (the kernel's) vxlan port on Linux

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


class ConfigError(ValueError):
    """The config is not one flannel would accept (or one overnet can run)."""


@dataclass(frozen=True)
class NetConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend: str = VXLAN
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT

    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    def compatible(self, subnet: IPv4Network) -> bool:
        """flannel's isSubnetConfigCompat: inside [SubnetMin, SubnetMax], right length."""
        return (subnet.prefixlen == self.subnet_len
                and self.subnet_min <= subnet.network_address <= self.subnet_max)

    def mtu(self, underlay_mtu: int) -> int:
        return underlay_mtu - VXLAN_OVERHEAD if self.backend == VXLAN else underlay_mtu

    def to_dict(self) -> dict[str, Any]:
        backend: dict[str, Any] = {"Type": self.backend}
        if self.backend == VXLAN:
            backend.update(VNI=self.vni, Port=self.port)
        return {"Network": str(self.network), "SubnetLen": self.subnet_len,
                "SubnetMin": str(self.subnet_min), "SubnetMax": str(self.subnet_max),
                "Backend": backend}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()


def _ip(value: Any, field: str) -> IPv4Address:
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be an IPv4 address string, got {value!r}")
    try:
        return IPv4Address(value)
    except ValueError:
        raise ConfigError(f"{field} {value!r} is not an IPv4 address") from None


def _int(data: dict, field: str, default: int) -> int:
    value = data.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field} must be an integer, got {value!r}")
    return value


def _backend(data: Any) -> tuple[str, int, int]:
    if data is None:
        # flanneld's default backend is udp, which overnet does not implement: running vxlan
        # instead would silently not interoperate with flanneld hosts of the same cluster.
        raise ConfigError('no Backend given (flannel then uses "udp", which overnet does '
                          'not support): add "Backend": {"Type": "vxlan"} or "host-gw"')
    if not isinstance(data, dict):
        raise ConfigError(f"Backend must be a JSON object, got {data!r}")
    kind = data.get("Type", "udp")
    if kind not in BACKENDS:
        raise ConfigError(f"backend type {kind!r} is not supported: use one of "
                          f"{', '.join(BACKENDS)}")
    vni = _int(data, "VNI", DEFAULT_VNI)
    port = _int(data, "Port", 0) or DEFAULT_PORT   # flannel: 0 means the kernel's 8472
    if not 0 < vni < 1 << 24:
        raise ConfigError(f"VNI {vni} out of range: 1 to {(1 << 24) - 1}")
    if not 0 < port < 1 << 16:
        raise ConfigError(f"Port {port} out of range: 1 to 65535")
    return kind, vni, port


def from_dict(data: Any) -> NetConfig:
    """Validate as flannel's ParseConfig + CheckNetworkConfig do, filling in defaults."""
    if not isinstance(data, dict):
        raise ConfigError("the network config must be a JSON object")
    raw = data.get("Network")
    if not raw:
        raise ConfigError("please define a correct Network parameter in the flannel config "
                          '(e.g. "Network": "10.1.0.0/16")')
    if not isinstance(raw, str) or "/" not in raw:
        raise ConfigError(f"Network {raw!r} is not an IPv4 CIDR (e.g. 10.1.0.0/16)")
    try:
        # flannel masks host bits away (Go's ParseCIDR), so 10.1.2.3/16 means 10.1.0.0/16
        network = IPv4Network(raw, strict=False)
    except ValueError:
        raise ConfigError(f"Network {raw!r} is not an IPv4 CIDR (e.g. 10.1.0.0/16)") from None
    subnet_len = _int(data, "SubnetLen", 0)
    if subnet_len > 0:
        # room for a tunnel and a bridge address on each host
        if subnet_len > 30:
            raise ConfigError(f"SubnetLen {subnet_len} must be less than /31")
        # more than two subnets: the first one is never handed out
        if subnet_len < network.prefixlen + 2:
            raise ConfigError(f"SubnetLen {subnet_len}: Network {network} must be able to "
                              "accommodate at least four subnets (SubnetLen >= "
                              f"{network.prefixlen + 2})")
    elif subnet_len < 0:
        raise ConfigError(f"SubnetLen {subnet_len} must be positive")
    elif network.prefixlen > 28:
        raise ConfigError(f"Network {network} is too small. Minimum useful network prefix "
                          "is /28")
    elif network.prefixlen <= 22:
        subnet_len = 24
    else:
        subnet_len = network.prefixlen + 2
    size = 1 << (32 - subnet_len)
    first = network.network_address
    # flannel skips the first subnet: its .0 address is the whole network's address
    subnet_min = _bound(data, "SubnetMin", network, first + size)
    subnet_max = _bound(data, "SubnetMax", network, network.broadcast_address + 1 - size)
    for field, value in (("SubnetMin", subnet_min), ("SubnetMax", subnet_max)):
        if int(value) % size:
            raise ConfigError(f"{field} is not on a SubnetLen boundary: {value} "
                              f"(SubnetLen {subnet_len})")
    if subnet_min > subnet_max:
        raise ConfigError(f"SubnetMin {subnet_min} is above SubnetMax {subnet_max}")
    backend, vni, port = _backend(data.get("Backend"))
    return NetConfig(network, subnet_len, subnet_min, subnet_max, backend, vni, port)


def _bound(data: dict, field: str, network: IPv4Network, default: IPv4Address) -> IPv4Address:
    value = data.get(field)
    if value in (None, "", "0.0.0.0"):
        return default
    addr = _ip(value, field)
    if addr not in network:
        raise ConfigError(f"{field} is not in the range of the Network: {addr} not in "
                          f"{network}")
    return addr


def parse(raw: bytes | str) -> NetConfig:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"the network config is not JSON: {e}") from None
    return from_dict(data)


def build(network: str, subnet_len: int | None = None, backend: str = VXLAN,
          subnet_min: str | None = None, subnet_max: str | None = None,
          vni: int | None = None, port: int | None = None) -> NetConfig:
    """A config from CLI-style arguments, validated the same way."""
    if not isinstance(network, str) or "/" not in network:
        raise ConfigError(f"Network {network!r} is not an IPv4 CIDR (e.g. 10.1.0.0/16)")
    try:
        net = IPv4Network(network, strict=False)
    except ValueError:
        raise ConfigError(f"Network {network!r} is not an IPv4 CIDR (e.g. 10.1.0.0/16)") \
            from None
    if str(net.network_address) != network.split("/")[0]:
        # written by us: refuse what is most likely a typo rather than mask it silently
        raise ConfigError(f"Network {network!r} has host bits set (did you mean {net}?)")
    data: dict[str, Any] = {"Network": network, "Backend": {"Type": backend}}
    if subnet_len is not None:
        data["SubnetLen"] = subnet_len
    if subnet_min is not None:
        data["SubnetMin"] = subnet_min
    if subnet_max is not None:
        data["SubnetMax"] = subnet_max
    if vni is not None:
        data["Backend"]["VNI"] = vni
    if port is not None:
        data["Backend"]["Port"] = port
    return from_dict(data)
