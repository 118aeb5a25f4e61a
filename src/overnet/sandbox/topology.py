"""What a lab is made of, and its bookkeeping in lab.json.

    underlay bridge <name>-br (root namespace, no address, no route)
      ├── store     netns <name>-store     192.168.33.10  etcd          (--store-members 1)
      │   or store-1 .10, store-2 .9, store-3 .8: one etcd cluster     (--store-members 3)
      ├── net-1     netns <name>-net-1     192.168.33.11  overnet agent
      └── net-2     netns <name>-net-2     192.168.33.12  overnet agent

Everything made is written down in lab.json as it is made, so `down` (and a failed `up`)
removes exactly that.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field

DEFAULT_UNDERLAY = "192.168.33.0/24"
ETCD_PORT = 2379
ETCD_PEER_PORT = 2380
LAB_ROOT = "/var/lib/overnet/sandbox"
STORE_MEMBERS = (1, 3)  # an etcd cluster wants an odd number of members


class LabError(Exception):
    pass


@dataclass
class Host:
    name: str
    netns: str
    address: str
    veth: str                 # root-namespace end, on the underlay bridge
    holder_pid: int = 0
    agent_pid: int = 0        # the overnet agent (or dockerd) of a host
    etcd_pid: int = 0         # the etcd member of a store host
    dockerd_pid: int = 0      # a host's own dockerd (sandbox up --runtimes docker)

    @property
    def run_dir(self) -> str:
        """The host's /run, seen from the root mount namespace."""
        return f"/proc/{self.holder_pid}/root/run"

    @property
    def socket(self) -> str:
        return self.run_dir + "/overnet/overnet.sock"

    def enter_argv(self) -> list[str]:
        """Prefix of a command run inside this host's network, mount and UTS namespaces
        (entered through its holder)."""
        return ["nsenter", "-t", str(self.holder_pid), "--net", "--mount", "--uts", "--"]

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{ETCD_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{ETCD_PEER_PORT}"


@dataclass
class LabState:
    name: str
    underlay: str
    bridge: str
    hosts: list[Host] = field(default_factory=list)
    stores: list[Host] = field(default_factory=list)   # the etcd members
    flannel: dict = field(default_factory=dict)
    agent_args: list = field(default_factory=list)
    runtimes: list = field(default_factory=list)      # "podman", "docker" on every host

    @property
    def store(self) -> Host | None:
        """The first store host (the only one with --store-members 1)."""
        return self.stores[0] if self.stores else None

    @property
    def etcd_pid(self) -> int:
        return self.stores[0].etcd_pid if self.stores else 0

    @property
    def store_url(self) -> str:
        """What agents get as --store: every member."""
        return "etcd://" + ",".join(f"{h.address}:{ETCD_PORT}" for h in self.stores) \
            if self.stores else ""

    def all_hosts(self) -> list[Host]:
        return self.hosts + self.stores


def store_names(members: int) -> list[str]:
    return ["store"] if members == 1 else [f"store-{i}" for i in range(1, members + 1)]


def store_address(net: ipaddress.IPv4Network, index: int) -> str:
    """Store member `index` (0-based): .10, then .9, .8 … (hosts count up from .11)."""
    return str(net.network_address + 10 - index)


def host_address(net: ipaddress.IPv4Network, index: int) -> str:
    """Host net-`index` (1-based): .11, .12, …"""
    return str(net.network_address + 10 + index)


def check_plan(underlay: str, hosts: int, store_members: int) -> ipaddress.IPv4Network:
    """The underlay as a network, or LabError naming the bad value."""
    try:
        net = ipaddress.IPv4Network(underlay)
    except ValueError:
        raise LabError(f"invalid --underlay {underlay!r}: expected an IPv4 CIDR such as "
                       f"{DEFAULT_UNDERLAY}") from None
    if hosts < 1 or hosts > 200:
        raise LabError(f"invalid --hosts {hosts}: between 1 and 200")
    if store_members not in STORE_MEMBERS:
        raise LabError(f"invalid --store-members {store_members}: 1 or 3 (an etcd cluster "
                       "needs an odd number of members)")
    if net.num_addresses < hosts + 14:
        raise LabError(f"underlay {net} is too small for {hosts} hosts")
    return net


def load(path: str) -> LabState | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    hosts = [Host(**h) for h in data.pop("hosts")]
    if "store" in data:  # lab.json of a lab made before store clusters: one store host
        store, pid = data.pop("store"), data.pop("etcd_pid", 0)
        data["stores"] = [{**store, "etcd_pid": pid}] if store else []
    stores = [Host(**h) for h in data.pop("stores")]
    return LabState(**data, hosts=hosts, stores=stores)


def save(path: str, state: LabState) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(asdict(state), f, indent=1)
    os.replace(path + ".tmp", path)


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command of this machine's tools (ip, etcdctl …), LabError with its message."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def check_free(net: ipaddress.IPv4Network, prefix: str) -> None:
    """LabError if the underlay overlaps an address of this machine, or namespaces of a lab
    with this name are still around."""
    for line in run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        addr = ipaddress.IPv4Interface(line.split()[3])
        if addr.network.overlaps(net):
            raise LabError(f"underlay {net} is already in use on this machine "
                           f"({addr} on {line.split()[1]}): choose another --underlay")
    for ns in run("ip", "netns", "list").stdout.split():
        if ns.startswith(prefix + "-"):
            raise LabError(f"namespace {ns} already exists: is another sandbox named "
                           f"{prefix!r} around? (`overnet sandbox down --name {prefix}`)")
