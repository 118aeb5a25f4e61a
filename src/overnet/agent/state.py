"""What an agent keeps on its own disk (--state-dir): the journal of its endpoints, its
runner's containers, store deletions still owed, and the IDs of its built-in networks.
Everything cluster-wide is in the store.

An endpoint is written here *before* its first side effect (phase "attaching") and marked
"attached" when it is complete, so an agent that dies at any moment finds, when it starts
again, every half-made endpoint and can finish removing it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field, fields
from typing import Any

from ..fsutil import write_atomic, write_own

log = logging.getLogger(__name__)

ATTACHING, ATTACHED, CONFLICT = "attaching", "attached", "conflict"


@dataclass
class LocalEndpoint:
    """One interface of one container (of any runtime) in one network, on this host."""
    id: str
    network: str               # network id
    network_name: str
    driver: str
    container_id: str
    ifname: str
    netns: str                 # path of the container's network namespace
    runtime: str = "overnet"
    name: str = ""             # DNS name
    aliases: list = field(default_factory=list)
    service: str = ""          # service name claimed with it ("" for none)
    ip: str = ""
    prefixlen: int = 0
    mac: str = ""
    gateway: str = ""
    mtu: int = 0
    host_ifname: str = ""
    handover: str = ""         # Docker: the container end was left in the host namespace
    phase: str = ATTACHING
    created: float = 0.0
    record: str = ""           # the JSON written to the store (to delete only our own)
    service_record: str = ""

    @property
    def ref(self) -> tuple[str, str]:
        return self.container_id, self.ifname


@dataclass
class Container:
    """A container of the built-in runner."""
    id: str
    name: str
    cmd: list
    created: float
    network: str = ""                            # network id
    network_name: str = ""
    service: str = ""
    detach: bool = False
    auto_remove: bool = False
    tty: bool = False
    privileged: bool = False
    env: dict = field(default_factory=dict)
    links: list = field(default_factory=list)    # [[container name, alias], ...]
    netns: str = ""                              # path, empty for host networking
    hosts_file: str = ""                         # the file /etc/hosts is mounted from
    pid: int = 0
    start_time: int = 0
    status: str = "created"                      # created | running | exited
    exit_code: int | None = None
    started: float = 0.0
    finished: float = 0.0
    net_setup_seconds: float | None = None       # agent-side set-up time (bench/)
    net_attach_seconds: float | None = None      # of which the endpoint's attach

    @property
    def hostname(self) -> str:
        return self.id[:12]


def _dump(record: Any) -> str:
    """A journal record as JSON: its fields hold only JSON types, so the instance's own dict
    serves as is (asdict's deep copy cost more than the write, on every start)."""
    return json.dumps(vars(record), separators=(",", ":"))


def _from_dict(cls: Any, data: dict) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


class LocalState:
    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.containers_dir = os.path.join(state_dir, "containers")
        self.endpoints_dir = os.path.join(state_dir, "endpoints")
        self.pending_dir = os.path.join(state_dir, "pending")
        self.netns_dir = os.path.join(state_dir, "netns")
        for d in (self.containers_dir, self.endpoints_dir, self.pending_dir, self.netns_dir):
            os.makedirs(d, exist_ok=True)

    # --- containers (the built-in runner) -------------------------------------------------

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def netns_path(self, name: str) -> str:
        return os.path.join(self.netns_dir, name[:12])

    def save(self, c: Container) -> None:
        os.makedirs(self.container_dir(c.id), exist_ok=True)
        write_atomic(os.path.join(self.container_dir(c.id), "config.json"), _dump(c))

    def load_all(self) -> list[Container]:
        return [c for c in (self._load(os.path.join(self.containers_dir, cid, "config.json"),
                                       Container)
                            for cid in sorted(os.listdir(self.containers_dir))) if c]

    def remove(self, cid: str) -> None:
        shutil.rmtree(self.container_dir(cid), ignore_errors=True)

    # --- endpoints (every runtime) --------------------------------------------------------

    def _endpoint_path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.endpoints_dir, f"{container_id}~{ifname}.json")

    def save_endpoint(self, ep: LocalEndpoint) -> None:
        write_own(self._endpoint_path(*ep.ref), _dump(ep))    # on every start: the lean way

    def remove_endpoint(self, ep: LocalEndpoint) -> None:
        path = self._endpoint_path(*ep.ref)
        for name in (path, path + ".tmp"):     # (.tmp: a write_own a crash cut short)
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

    def load_endpoints(self) -> list[LocalEndpoint]:
        return [e for e in (self._load(os.path.join(self.endpoints_dir, f), LocalEndpoint)
                            for f in sorted(os.listdir(self.endpoints_dir))
                            if f.endswith(".json")) if e]

    # --- store deletions owed (the store was unreachable when they were due) --------------

    def owe_deletion(self, key: str, value: bytes) -> None:
        """Remember to delete `key` once the store answers, if it still holds `value`."""
        name = secrets.token_hex(8) + ".json"
        write_atomic(os.path.join(self.pending_dir, name),
                     json.dumps({"key": key, "value": value.decode()}))

    def owed_deletions(self) -> list[tuple[str, str, bytes]]:
        out = []
        for name in sorted(os.listdir(self.pending_dir)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.pending_dir, name)) as f:
                    d = json.load(f)
                out.append((name, str(d["key"]), str(d["value"]).encode()))
            except (OSError, ValueError, KeyError, TypeError):
                os.unlink(os.path.join(self.pending_dir, name))
        return out

    def settle_deletion(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.pending_dir, name))
        except FileNotFoundError:
            pass

    # --- built-in networks ----------------------------------------------------------------

    def builtin_ids(self) -> dict[str, str]:
        """Random IDs for none/host/bridge, made once per host (they differ between hosts,
        as in the seed's listings)."""
        path = os.path.join(self.dir, "networks.json")
        try:
            with open(path) as f:
                ids = json.load(f)
        except (OSError, ValueError):
            ids = {}
        missing = [n for n in ("none", "host", "bridge") if n not in ids]
        for name in missing:
            ids[name] = secrets.token_hex(32)
        if missing:
            write_atomic(path, json.dumps(ids))
        return ids

    @staticmethod
    def _load(path: str, cls: Any) -> Any:
        try:
            with open(path) as f:
                return _from_dict(cls, json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            log.warning("ignoring unreadable state file %s: %s", path, e)
            return None
