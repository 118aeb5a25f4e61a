"""Records kept in the store: JSON objects, validated when read.

A value that does not parse is logged with its key and skipped (`decode` returns None):
one bad record written by hand or by another version never crashes an agent.

Validation here is about one record alone (shapes, names, address kinds); whether a record
fits the cluster (its VTEP is its host's, its IP is in the subnet and not taken) is
`validate.py`'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..runtime.names import is_valid_name, shown

log = logging.getLogger(__name__)

HEX64 = re.compile(r"[0-9a-f]{64}")
MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
# Key segments written by others (endpoint and container IDs, from CNI or Docker): CNI's rule.
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,255}", re.ASCII)
HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}", re.ASCII)
IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", re.ASCII)   # IFNAMSIZ - 1
RUNTIMES = ("overnet", "cni", "docker", "podman", "containerd")
MAX_ALIASES = 16


class BadRecord(ValueError):
    pass


R = TypeVar("R", bound="Record")


def _check_type(name: str, value: Any, hint: Any) -> None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    base = origin or hint
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRecord(f"field {name!r}: expected a finite number, got {value!r}")
        return
    if base is int and isinstance(value, bool):
        raise BadRecord(f"field {name!r}: expected int, got {value!r}")
    if not isinstance(value, base):
        raise BadRecord(f"field {name!r}: expected {getattr(base, '__name__', base)}, "
                        f"got {shown(value)}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A record class's field types, resolved once (typing.get_type_hints costs ~0.4 ms)."""
    return typing.get_type_hints(cls)


@dataclass(slots=True)
class Record:
    """Base: JSON round trip plus per-record `validate()`.

    Records have slots and their repeated strings (network IDs, host names, ...: the
    `SHARED` fields) are interned when read: an agent holds every endpoint of the cluster
    decoded, and these saved ~0.6 KB per endpoint (tracemalloc, 1,000 endpoints)."""

    SHARED: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        if not isinstance(data, dict):
            raise BadRecord(f"expected a JSON object, got {type(data).__name__}")
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = data[f.name]
                _check_type(f.name, value, hints[f.name])
                kwargs[f.name] = (sys.intern(value) if f.name in cls.SHARED
                                  and type(value) is str else value)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadRecord(f"missing field {f.name!r}")
        rec = cls(**kwargs)
        rec.validate()
        return rec

    @classmethod
    def from_json(cls: type[R], raw: bytes | str) -> R:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:   # RecursionError: "[[[[..." nested deep
            raise BadRecord(f"not JSON: {shown(str(e))}") from None
        return cls.from_dict(data)

    def validate(self) -> None:
        pass


def decode(cls: type[R], key: str, raw: bytes) -> R | None:
    """Parse a store value; log and return None if it is bad."""
    try:
        return cls.from_json(raw)
    except BadRecord as e:
        log.warning("skipping bad record at %s: %s", key, e)
        return None


def _cidr(value: str, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value)
    except ValueError:
        raise BadRecord(f"{what}: bad CIDR {shown(value)!r}") from None


def _ip(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise BadRecord(f"{what}: bad IPv4 address {shown(value)!r}") from None


def unicast(value: str, what: str) -> ipaddress.IPv4Address:
    """An address a packet may be sent to and come from: not 0.0.0.0/8, loopback,
    multicast, link-local, broadcast or reserved (240/4)."""
    ip = _ip(value, what)
    if (ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_reserved
            or ip in _THIS_NETWORK):
        raise BadRecord(f"{what}: {ip} is not a unicast host address")
    return ip


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def check_mac(value: str) -> None:
    if not MAC.fullmatch(value):
        raise BadRecord(f"bad MAC {shown(value)!r}")
    if int(value[:2], 16) & 1 or value == "00:00:00:00:00:00":
        raise BadRecord(f"MAC {value}: not a unicast address")


def _label(value: str, what: str, empty_ok: bool = False) -> None:
    if not (is_valid_name(value) or (empty_ok and value == "")):
        raise BadRecord(f"{what} {shown(value)!r}: not a name (1-63 letters, digits, '_', '-')")


def _match(pattern: re.Pattern, value: str, what: str) -> None:
    if not pattern.fullmatch(value) or value in (".", ".."):
        raise BadRecord(f"bad {what} {shown(value)!r}")


@dataclass(slots=True)
class NetworkRecord(Record):
    id: str
    name: str
    driver: str            # "overlay" in the store; local drivers never reach it
    subnet: str
    gateway: str
    vni: int = 0
    created: float = 0.0
    created_by: str = ""   # host name
    pool_claimed: bool = False  # subnet came from the default range (PoolClaim to release)
    labels: dict = field(default_factory=dict)

    def validate(self) -> None:
        _match(HEX64, self.id, "network id")
        _label(self.name, "network name")
        net = _cidr(self.subnet, "subnet")
        gw = _ip(self.gateway, "gateway")
        if gw not in net:
            raise BadRecord(f"gateway {gw} not in subnet {net}")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)


@dataclass(slots=True)
class NameClaim(Record):
    id: str

    def validate(self) -> None:
        _match(HEX64, self.id, "network id")


@dataclass(slots=True)
class VniClaim(Record):
    network: str

    def validate(self) -> None:
        _match(HEX64, self.network, "network id")


@dataclass(slots=True)
class PoolClaim(Record):
    network: str

    def validate(self) -> None:
        _match(HEX64, self.network, "network id")


@dataclass(slots=True)
class HostRecord(Record):
    name: str
    address: str       # underlay (advertise) address: the VXLAN tunnel endpoint
    started: float = 0.0
    mtu: int = 1500    # underlay MTU

    def validate(self) -> None:
        _match(HOSTNAME, self.name, "host name")
        unicast(self.address, "host address")
        if not 68 <= self.mtu <= 65535:
            raise BadRecord(f"host MTU {self.mtu}: not from 68 to 65535")


@dataclass(slots=True)
class BlockRecord(Record):
    host: str

    def validate(self) -> None:
        _match(HOSTNAME, self.host, "host name")


@dataclass(slots=True)
class EndpointRecord(Record):
    id: str            # 64 hex
    network: str       # network id
    container: str     # container id (64 hex)
    name: str          # container name (the discovery name)
    host: str          # host name
    host_address: str  # host's underlay address (VTEP)
    ip: str
    mac: str
    aliases: list = field(default_factory=list)  # extra names (services, links)
    runtime: str = ""  # who attached it: one of RUNTIMES ("" from older agents)
    ifname: str = ""   # its interface inside the container ("" from older agents)

    SHARED: ClassVar[tuple[str, ...]] = ("network", "host", "host_address", "runtime",
                                         "ifname")

    def validate(self) -> None:
        _match(SEGMENT, self.id, "endpoint id")
        _match(HEX64, self.network, "network id")
        _match(SEGMENT, self.container, "container id")
        _label(self.name, "endpoint name", empty_ok=True)   # "": no discovery name (CNI)
        if len(self.aliases) > MAX_ALIASES:
            raise BadRecord(f"{len(self.aliases)} aliases: at most {MAX_ALIASES}")
        for alias in self.aliases:
            _label(alias, "alias")
        _match(HOSTNAME, self.host, "host name")
        unicast(self.host_address, "endpoint host address")
        unicast(self.ip, "endpoint ip")
        check_mac(self.mac)
        if self.runtime not in RUNTIMES + ("",):
            raise BadRecord(f"unknown runtime {shown(self.runtime)!r}")
        if self.ifname:
            _match(IFNAME, self.ifname, "interface name")


@dataclass(slots=True)
class ServiceRecord(Record):
    id: str            # 64 hex
    name: str
    network: str       # network id
    network_name: str
    container: str     # container id
    endpoint: str      # endpoint id
    host: str

    T: ClassVar[str] = "service"
    SHARED: ClassVar[tuple[str, ...]] = ("network", "network_name", "host")

    def validate(self) -> None:
        _label(self.name, "service name")
        _match(HEX64, self.network, "network id")
        _match(HOSTNAME, self.host, "host name")
