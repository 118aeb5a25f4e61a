"""Records kept in the store: JSON objects, validated when read.

A value that does not parse is logged with its key and skipped (`decode` returns None):
one bad record written by hand or by another version never crashes an agent.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

log = logging.getLogger(__name__)

HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


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
    if base is float and isinstance(value, int):
        return
    if base is int and isinstance(value, bool):
        raise BadRecord(f"field {name!r}: expected int, got {value!r}")
    if not isinstance(value, base):
        raise BadRecord(f"field {name!r}: expected {getattr(base, '__name__', base)}, got {value!r}")


@dataclass
class Record:
    """Base: JSON round trip plus per-record `validate()`."""

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        if not isinstance(data, dict):
            raise BadRecord(f"expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                _check_type(f.name, data[f.name], hints[f.name])
                kwargs[f.name] = data[f.name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadRecord(f"missing field {f.name!r}")
        rec = cls(**kwargs)
        rec.validate()
        return rec

    @classmethod
    def from_json(cls: type[R], raw: bytes | str) -> R:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRecord(f"not JSON: {e}") from None
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
        raise BadRecord(f"{what}: bad CIDR {value!r}") from None


def _ip(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise BadRecord(f"{what}: bad IPv4 address {value!r}") from None


@dataclass
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
        if not HEX64.match(self.id):
            raise BadRecord(f"bad network id {self.id!r}")
        net = _cidr(self.subnet, "subnet")
        gw = _ip(self.gateway, "gateway")
        if gw not in net:
            raise BadRecord(f"gateway {gw} not in subnet {net}")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)


@dataclass
class NameClaim(Record):
    id: str


@dataclass
class VniClaim(Record):
    network: str


@dataclass
class PoolClaim(Record):
    network: str


@dataclass
class HostRecord(Record):
    name: str
    address: str       # underlay (advertise) address: the VXLAN tunnel endpoint
    started: float = 0.0
    mtu: int = 1500    # underlay MTU

    def validate(self) -> None:
        _ip(self.address, "host address")


@dataclass
class BlockRecord(Record):
    host: str


@dataclass
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

    def validate(self) -> None:
        _ip(self.ip, "endpoint ip")
        _ip(self.host_address, "endpoint host address")
        if not MAC.match(self.mac):
            raise BadRecord(f"bad MAC {self.mac!r}")


@dataclass
class ServiceRecord(Record):
    id: str            # 64 hex
    name: str
    network: str       # network id
    network_name: str
    container: str     # container id
    endpoint: str      # endpoint id
    host: str

    T: ClassVar[str] = "service"
