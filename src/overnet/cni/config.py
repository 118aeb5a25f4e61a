"""The network configuration on stdin: decoded and validated at this boundary."""

from __future__ import annotations

import os

from ..api import wire
from .spec import DECODE_FAILURE, INVALID_CONFIG, CniError, check_supported

DEFAULT_SOCKET = "/run/overnet/overnet.sock"
PENDING_DIR_NAME = "cni-pending"


def default_pending_dir(socket: str) -> str:
    """DELs kept for an agent live beside its socket: they belong to that agent (several
    agents on one machine, as in the sandbox, each have their own /run/overnet)."""
    return os.path.join(os.path.dirname(socket), PENDING_DIR_NAME)

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def decode(data: bytes) -> dict:
    """stdin -> a JSON object with a valid `name` (what skel checks before any verb)."""
    try:
        conf = wire.loads(data)
    except ValueError as e:
        raise CniError(DECODE_FAILURE, f"error decoding the network config: {e}") from None
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "the network config is not a JSON object")
    name = conf.get("name")
    if not name or not isinstance(name, str):
        raise CniError(INVALID_CONFIG, "missing network name", "the config has no \"name\"")
    if name[0] not in _NAME_CHARS - set("_.-") or not set(name) <= _NAME_CHARS:
        raise CniError(INVALID_CONFIG, f"invalid characters in network name {name!r}")
    return conf


def version_of(conf: dict) -> str:
    """The config's cniVersion, checked against the versions this plugin speaks. A config
    without one is 0.1.0 to libcni, which this plugin does not speak."""
    version = conf.get("cniVersion", "0.1.0")
    check_supported(version)
    return version


def string_field(conf: dict, key: str, default: str) -> str:
    value = conf.get(key, default)
    if not isinstance(value, str) or not value:
        raise CniError(INVALID_CONFIG, f"invalid {key!r} {value!r} in the network config",
                       f"{key} must be a non-empty string")
    return value


def path_field(conf: dict, key: str, default: str) -> str:
    value = string_field(conf, key, default)
    if not value.startswith("/"):
        raise CniError(INVALID_CONFIG, f"invalid {key!r} {value!r} in the network config",
                       f"{key} must be an absolute path")
    return value


def object_field(conf: dict, key: str) -> dict:
    value = conf.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, f"invalid {key!r} {wire.dumps(value)} in the network "
                       "config", f"{key} must be a JSON object")
    return value


class OvernetConf:
    """The fields of an `overnet-cni` member of a network configuration list."""

    __slots__ = (
        "name",
        "network",
        "pending_dir",
        "prev_result",
        "runtime_config",
        "socket",
        "version",
    )

    def __init__(self, conf: dict) -> None:
        self.version = version_of(conf)
        self.name: str = conf["name"]
        self.network = string_field(conf, "network", self.name)
        self.socket = path_field(conf, "agentSocket", DEFAULT_SOCKET)
        self.pending_dir = path_field(conf, "pendingDir", default_pending_dir(self.socket))
        self.prev_result = object_field(conf, "prevResult") or None
        self.runtime_config = object_field(conf, "runtimeConfig")


def valid_attachments(conf: dict) -> set[tuple[str, str]]:
    """GC's `cni.dev/valid-attachments`: the (containerID, ifname) pairs to keep."""
    items = conf.get("cni.dev/valid-attachments", [])
    if not isinstance(items, list):
        raise CniError(INVALID_CONFIG, "invalid 'cni.dev/valid-attachments': not a list")
    keep = set()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) \
                or not isinstance(item.get("ifname"), str):
            raise CniError(INVALID_CONFIG, f"invalid attachment {wire.dumps(item)} in "
                           "'cni.dev/valid-attachments'", "expected {\"containerID\", \"ifname\"}")
        keep.add((item["containerID"], item["ifname"]))
    return keep
