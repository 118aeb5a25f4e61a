"""What an agent keeps on its own disk (--state-dir): its local containers and the IDs of its
built-in networks. Everything cluster-wide is in the store."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field


@dataclass
class NetAttachment:
    network: str          # network id
    network_name: str
    driver: str
    endpoint: str = ""    # endpoint id (also the store key), empty for null/host
    ip: str = ""
    prefixlen: int = 0
    mac: str = ""
    host_ifname: str = ""
    service: str = ""     # published service name


@dataclass
class Container:
    id: str
    name: str
    cmd: list
    created: float
    detach: bool = False
    auto_remove: bool = False
    tty: bool = False
    env: dict = field(default_factory=dict)
    links: list = field(default_factory=list)    # [[container name, alias], ...]
    net: NetAttachment | None = None
    netns: str = ""                              # path, empty for host networking
    hosts_file: str = ""                         # the file now mounted on /etc/hosts
    pid: int = 0
    start_time: int = 0
    status: str = "created"                      # created | running | exited
    exit_code: int | None = None
    started: float = 0.0
    finished: float = 0.0
    net_setup_seconds: float | None = None       # how long _connect took (bench/)

    @property
    def hostname(self) -> str:
        return self.id[:12]

    @classmethod
    def from_dict(cls, data: dict) -> "Container":
        net = data.pop("net", None)
        c = cls(**data)
        c.net = NetAttachment(**net) if net else None
        return c


class LocalState:
    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.containers_dir = os.path.join(state_dir, "containers")
        self.netns_dir = os.path.join(state_dir, "netns")
        os.makedirs(self.containers_dir, exist_ok=True)
        os.makedirs(self.netns_dir, exist_ok=True)

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def netns_path(self, name: str) -> str:
        return os.path.join(self.netns_dir, name[:12])

    def save(self, c: Container) -> None:
        d = self.container_dir(c.id)
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, "config.json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(c), f, indent=1)
        os.replace(tmp, os.path.join(d, "config.json"))

    def load_all(self) -> list[Container]:
        out = []
        for cid in sorted(os.listdir(self.containers_dir)):
            path = os.path.join(self.containers_dir, cid, "config.json")
            try:
                with open(path) as f:
                    out.append(Container.from_dict(json.load(f)))
            except (OSError, ValueError, TypeError):
                shutil.rmtree(self.container_dir(cid), ignore_errors=True)
        return out

    def remove(self, cid: str) -> None:
        shutil.rmtree(self.container_dir(cid), ignore_errors=True)

    def builtin_ids(self) -> dict[str, str]:
        """Random IDs for none/host/bridge, made once per host (they differ between hosts,
        as in the seed's listings)."""
        path = os.path.join(self.dir, "networks.json")
        try:
            with open(path) as f:
                ids = json.load(f)
        except (OSError, ValueError):
            ids = {}
        changed = False
        for name in ("none", "host", "bridge"):
            if name not in ids:
                ids[name] = secrets.token_hex(32)
                changed = True
        if changed:
            with open(path + ".tmp", "w") as f:
                json.dump(ids, f)
            os.replace(path + ".tmp", path)
        return ids
