"""The `flannel` type: flannel's own CNI plugin, faithfully, over the subnet.env that the
overnet agent writes. It builds a delegate config (bridge + host-local by default) from the
host's subnet lease, keeps it per container for DEL, and runs the delegate from CNI_PATH."""

from __future__ import annotations

import ipaddress
import os
import sys

from ..api import wire
from .config import object_field, path_field, valid_attachments, version_of
from .delegate import invoke
from .env import Invocation
from .spec import (
    DECODE_FAILURE,
    INVALID_CONFIG,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
    require,
)

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"


class SubnetEnv:
    """What subnet.env says about this host's lease."""

    __slots__ = ("bridge", "ip6_networks", "ip6_subnet", "ipmasq", "mtu", "networks",
                 "range_start", "subnet")

    def __init__(self) -> None:
        self.networks: list[str] = []
        self.ip6_networks: list[str] = []
        self.subnet: str | None = None
        self.ip6_subnet: str | None = None
        self.mtu: int | None = None
        self.ipmasq: bool | None = None
        # written by the overnet agent (flanneld does not): its bridge holds the subnet's
        # gateway, and CNI containers take the addresses from range_start on (the agent's own
        # containers take the ones below), so the two never give out one address twice
        self.bridge: str | None = None
        self.range_start: str | None = None


def load_subnet_env(path: str) -> SubnetEnv:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise CniError(TRY_AGAIN_LATER, f"{path} does not exist (yet)",
                       "the overnet agent writes it once this host has its subnet lease; "
                       "is the agent running?") from None
    env = SubnetEnv()
    for line in lines:
        key, _, value = line.partition("=")
        try:
            _assign(env, key.strip(), value.strip())
        except ValueError:
            raise CniError(DECODE_FAILURE, f"invalid {key.strip()} {value.strip()!r} in {path}") \
                from None
    missing = _missing(env)
    if missing:
        raise CniError(DECODE_FAILURE, f"{path} is missing {missing}")
    return env


def _assign(env: SubnetEnv, key: str, value: str) -> None:
    """Subnets are kept as networks ("10.1.17.1/24" -> "10.1.17.0/24"), as flannel's Go
    ParseCIDR does; FLANNEL_NETWORK may list several networks, comma separated."""
    def nets(v: str) -> list[str]:
        return [str(ipaddress.ip_network(n.strip(), strict=False)) for n in v.split(",") if n]
    if key == "FLANNEL_NETWORK":
        env.networks = nets(value)
    elif key == "FLANNEL_IPV6_NETWORK":
        env.ip6_networks = nets(value)
    elif key == "FLANNEL_SUBNET":
        env.subnet = str(ipaddress.ip_network(value, strict=False))
    elif key == "FLANNEL_IPV6_SUBNET":
        env.ip6_subnet = str(ipaddress.ip_network(value, strict=False))
    elif key == "FLANNEL_MTU":
        if not value.isdigit():
            raise ValueError(value)
        env.mtu = int(value)
    elif key == "FLANNEL_IPMASQ":
        env.ipmasq = value == "true"
    elif key == "OVERNET_BRIDGE":
        env.bridge = value
    elif key == "OVERNET_CNI_RANGE_START":
        env.range_start = str(ipaddress.ip_address(value))


def _missing(env: SubnetEnv) -> str:
    missing = []
    if not env.networks and not env.ip6_networks:
        missing += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
    if not env.subnet and not env.ip6_subnet:
        missing += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]
    if env.mtu is None:
        missing.append("FLANNEL_MTU")
    if env.ipmasq is None:
        missing.append("FLANNEL_IPMASQ")
    return ", ".join(missing)


def delegate_config(conf: dict, env: SubnetEnv) -> dict:
    """The config flannel's plugin hands its delegate: the `delegate` fields as given, then
    name, type bridge, ipMasq unless flannel masquerades, the lease's MTU, a gateway bridge,
    and host-local IPAM over this host's subnet with a route to the whole flannel network."""
    delegate = dict(object_field(conf, "delegate"))
    if "type" in delegate and not isinstance(delegate["type"], str):
        raise CniError(INVALID_CONFIG, "'delegate' dictionary, if present, must have (string) "
                       "'type' field")
    for key in ("name", "ipam"):
        if key in delegate:
            raise CniError(INVALID_CONFIG, f"'delegate' dictionary must not have '{key}' "
                           "field, it'll be set by flannel")
    runtime_config = object_field(conf, "runtimeConfig")
    if runtime_config:
        delegate["runtimeConfig"] = runtime_config
    delegate["name"] = conf["name"]
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
        if env.bridge:
            delegate.setdefault("bridge", env.bridge)
    if conf.get("cniVersion"):
        delegate["cniVersion"] = conf["cniVersion"]
    delegate["ipam"] = delegate_ipam(conf, env)
    return delegate


def delegate_ipam(conf: dict, env: SubnetEnv) -> dict:
    ipam = dict(object_field(conf, "ipam"))
    ipam.setdefault("type", "host-local")
    ipam["ranges"] = [[{"subnet": s}] for s in (env.subnet, env.ip6_subnet) if s]
    if env.range_start and env.subnet:
        ipam["ranges"][0][0]["rangeStart"] = env.range_start
    routes = ipam.get("routes") or []
    if not isinstance(routes, list):
        raise CniError(INVALID_CONFIG, f"invalid 'ipam.routes' {wire.dumps(routes)}")
    ipam["routes"] = list(routes) + [{"dst": n} for n in env.networks + env.ip6_networks]
    return ipam


def run(inv: Invocation, conf: dict) -> dict | None:
    version = version_of(conf)
    subnet_file = path_field(conf, "subnetFile", DEFAULT_SUBNET_FILE)
    data_dir = path_field(conf, "dataDir", DEFAULT_DATA_DIR)
    if inv.command == "ADD":
        return cmd_add(inv, conf, load_subnet_env(subnet_file), data_dir)
    if inv.command == "DEL":
        return cmd_del(inv, data_dir)
    if inv.command == "CHECK":
        require(version, "0.4.0", "CHECK")
        return cmd_check(inv, conf, data_dir)
    require(version, "1.1.0", inv.command)
    if inv.command == "GC":
        return cmd_gc(inv, conf, subnet_file, data_dir)
    return cmd_status(inv, conf, subnet_file)


def cmd_add(inv: Invocation, conf: dict, env: SubnetEnv, data_dir: str) -> dict | None:
    data = wire.dumps(delegate_config(conf, env)).encode()
    save_scratch(data_dir, inv.container_id, data)
    try:
        return invoke(inv, "ADD", data)
    except CniError:
        # the spec: a failed delegate ADD is undone with a DEL before the failure is reported
        try:
            invoke(inv, "DEL", data)
        except CniError as e:
            print(f"flannel: cleaning up after the failed ADD: {e.msg}", file=sys.stderr)
        drop_scratch(data_dir, inv.container_id)
        raise


def cmd_del(inv: Invocation, data_dir: str) -> None:
    """With the config saved at ADD; nothing saved means nothing to undo (DEL is idempotent)."""
    data = read_scratch(data_dir, inv.container_id)
    if data is None:
        return
    try:
        wire.loads(data)["type"]
    except (ValueError, KeyError, TypeError):
        # as flannel: the interface stays on the bridge until reboot, but DEL must not fail
        print(f"flannel: unreadable saved config for {inv.container_id}", file=sys.stderr)
        return
    invoke(inv, "DEL", data)
    drop_scratch(data_dir, inv.container_id)
    return


def cmd_check(inv: Invocation, conf: dict, data_dir: str) -> None:
    data = read_scratch(data_dir, inv.container_id)
    if data is None:
        raise CniError(UNKNOWN_CONTAINER, f"container {inv.container_id} is not attached",
                       f"no saved config in {data_dir}")
    delegate = wire.loads(data)
    if isinstance(conf.get("prevResult"), dict):
        delegate["prevResult"] = routes_with_gateway(conf["prevResult"])
    invoke(inv, "CHECK", wire.dumps(delegate).encode())


def routes_with_gateway(result: dict) -> dict:
    """The bridge plugin installs IPAM routes that have no gw via the IP's gateway but reports
    them without one, and its CHECK then misses them in the kernel (flannel's own CHECK does
    nothing, which hides that). Name the gateway the kernel route really has."""
    gateways = [ip.get("gateway") for ip in result.get("ips") or [] if ip.get("gateway")]
    if not gateways:
        return result
    routes = []
    for route in result.get("routes") or []:
        if not route.get("gw"):
            v6 = ":" in route.get("dst", "")
            gw = next((g for g in gateways if (":" in g) == v6), None)
            route = dict(route, gw=gw) if gw else route
        routes.append(route)
    return dict(result, routes=routes)


def cmd_gc(inv: Invocation, conf: dict, subnet_file: str, data_dir: str) -> None:
    """Forward GC to the delegate (its IPAM frees stale addresses), then drop saved configs of
    containers the runtime no longer lists."""
    keep = valid_attachments(conf)
    delegate = delegate_config(conf, load_subnet_env(subnet_file))
    delegate["cni.dev/valid-attachments"] = conf.get("cni.dev/valid-attachments", [])
    invoke(inv, "GC", wire.dumps(delegate).encode())
    live = {cid for cid, _ in keep}
    for cid in _scratch_names(data_dir):
        if cid not in live and _saved_name(data_dir, cid) == conf["name"]:
            drop_scratch(data_dir, cid)   # (the dataDir may be shared by other networks)


def cmd_status(inv: Invocation, conf: dict, subnet_file: str) -> None:
    try:
        env = load_subnet_env(subnet_file)
    except CniError as e:
        raise CniError(NOT_AVAILABLE, e.msg, e.details) from None
    invoke(inv, "STATUS", wire.dumps(delegate_config(conf, env)).encode())


def save_scratch(data_dir: str, container_id: str, data: bytes) -> None:
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, container_id)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_scratch(data_dir: str, container_id: str) -> bytes | None:
    try:
        with open(os.path.join(data_dir, container_id), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def drop_scratch(data_dir: str, container_id: str) -> None:
    try:
        os.unlink(os.path.join(data_dir, container_id))
    except FileNotFoundError:
        pass


def _saved_name(data_dir: str, container_id: str) -> str | None:
    try:
        return wire.loads(read_scratch(data_dir, container_id) or b"{}").get("name")
    except (ValueError, AttributeError):
        return None


def _scratch_names(data_dir: str) -> list[str]:
    try:
        return [n for n in os.listdir(data_dir) if ".tmp" not in n]
    except FileNotFoundError:
        return []
