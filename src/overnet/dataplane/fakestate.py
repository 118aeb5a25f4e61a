"""The state an in-memory data plane keeps (fake.py), and its fault injection.

Kept apart from fake.py so a test can read the records without reading the behaviour.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import secrets
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

from overnet.dataplane.model import LOOPBACK_INDEX, DataplaneError, LinkInfo

P = ParamSpec("P")
R = TypeVar("R")
NsKey = str | None  # absolute path of a namespace; None is the host namespace


@dataclass
class FakeLink:
    """One device. Tests may read and change any field (to corrupt state on purpose)."""

    name: str
    index: int
    kind: str | None
    mtu: int
    mac: str
    up: bool = False
    master: str | None = None
    addresses: list[str] = field(default_factory=list)   # "ip/prefixlen"
    peer: tuple[NsKey, str] | None = None   # veth: (namespace, name) of the other end
    lower: tuple[NsKey, str] | None = None  # macvlan: (namespace, name) of its lower device
    vxlan: dict[str, Any] | None = None     # vni, port, local, learning, proxy, l2miss, l3miss
    fdb: dict[str, str] = field(default_factory=dict)    # vxlan: mac -> vtep ip
    neigh: dict[str, str] = field(default_factory=dict)  # vxlan: ip -> mac


@dataclass(frozen=True)
class FakeRoute:
    dst: str                    # "0.0.0.0/0", "10.1.6.0/24"
    dev: str
    gateway: str | None = None
    proto: int | None = None    # routes.RTPROT_OVERNET for host-gw routes


@dataclass
class FakeNamespace:
    path: NsKey
    links: dict[str, FakeLink] = field(default_factory=dict)
    routes: dict[str, FakeRoute] = field(default_factory=dict)   # main table, by dst
    forwarding: bool = False
    _next_index: int = LOOPBACK_INDEX + 1

    @classmethod
    def fresh(cls, path: NsKey) -> FakeNamespace:
        """A new namespace as the kernel makes it, after create_netns set lo up."""
        ns = cls(path)
        ns.links["lo"] = FakeLink("lo", LOOPBACK_INDEX, None, 65536, "00:00:00:00:00:00",
                                  up=True, addresses=["127.0.0.1/8"])
        return ns

    def add(self, name: str, kind: str | None, mtu: int, mac: str | None = None,
            **fields: Any) -> FakeLink:
        link = FakeLink(name, self._next_index, kind, mtu, (mac or random_mac()).lower(),
                        **fields)
        self._next_index += 1
        self.links[name] = link
        return link

    def by_index(self, index: int) -> FakeLink | None:
        return next((li for li in self.links.values() if li.index == index), None)

    def info(self, link: FakeLink, peer_index: int | None) -> LinkInfo:
        return LinkInfo(name=link.name, index=link.index, kind=link.kind, mtu=link.mtu,
                        mac=link.mac, up=link.up, master=link.master,
                        addresses=sorted(link.addresses), peer_index=peer_index)


def random_mac() -> str:
    """A locally administered unicast MAC, as the kernel gives a veth or bridge."""
    first = (secrets.randbelow(256) & 0xFC) | 0x02
    return ":".join([f"{first:02x}", *(f"{secrets.randbelow(256):02x}" for _ in range(5))])


class Call(NamedTuple):
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Fault:
    exc: BaseException
    after: bool   # apply the call's effect first, then raise (a crash after the kernel acted)
    times: int


class _Faulty(Protocol):
    calls: list[Call]
    faults: dict[str, Fault]
    closed: bool


def operation(fn: Callable[Concatenate[Any, P], R]
              ) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """Make a synchronous fake operation an async method that logs calls and takes faults."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: _Faulty, *args: P.args, **kwargs: P.kwargs) -> R:
        self.calls.append(Call(name, args, kwargs))
        if self.closed and name != "close":
            raise DataplaneError("the data plane is closed")
        await asyncio.sleep(0)  # a real call yields to other tasks while the kernel works
        fault = self.faults.get(name)
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[name]
            if not fault.after:
                raise fault.exc
        result = fn(self, *args, **kwargs)
        if fault is not None:
            raise fault.exc
        return result

    wrapper.is_operation = True  # type: ignore[attr-defined]  # what fail_next accepts
    return wrapper


# -- helpers shared by the fake's modules ---------------------------------------------------------

_MIN_MTU, _MAX_MTU = 68, 65535


@contextmanager
def bad_input(what: str) -> Iterator[None]:
    """Bad input (ValueError) becomes a DataplaneError saying what was being done."""
    try:
        yield
    except ValueError as exc:
        raise DataplaneError(f"{what}: {exc}", errno.EINVAL) from exc


def check_mtu(mtu: int, what: str) -> None:
    if not _MIN_MTU <= mtu <= _MAX_MTU:
        raise DataplaneError(f"{what}: invalid MTU {mtu}", errno.EINVAL)


def ns_key(path: str | None) -> NsKey:
    return None if path is None else os.path.abspath(path)


def networks(link: FakeLink) -> list[ipaddress.IPv4Network]:
    return [ipaddress.IPv4Interface(a).network for a in link.addresses]


def holder(ns: FakeNamespace, address: str) -> FakeLink | None:
    """The device holding IPv4 `address` (an "ip/prefix" of it has that ip)."""
    return next((li for li in ns.links.values()
                 if any(a.split("/")[0] == address for a in li.addresses)), None)
