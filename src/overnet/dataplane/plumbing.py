"""Netlink plumbing shared by the kernel modules: one socket per namespace, errors, helpers.

One netlink socket is cached per namespace the agent programs (host, network namespaces);
container namespaces get a transient socket per call, all sharing one event loop (a sync
pyroute2 socket otherwise makes a new asyncio loop each time, the larger part of its cost).
The ifindex of bridges is remembered too (a link 'get' costs more than the change itself).
pyroute2 sockets are bound to the namespace of the
thread that creates them and are kept per thread, so a `Netlink` is NOT thread-safe: it binds to
the first thread that uses it and refuses calls from any other thread.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from socket import AF_INET
from typing import Any, Self, TypeVar

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from overnet.dataplane import netns
from overnet.dataplane.model import DataplaneError
from overnet.dataplane.rtnl import Rtnl

T = TypeVar("T")

IFF_UP = 1  # ifinfomsg flag: administratively up


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        # pyroute2 puts the kernel's extended ack message (when any) in args[1].
        msg = exc.args[1] if len(exc.args) > 1 and exc.args[1] else os.strerror(exc.code)
        return f"{msg} (errno {exc.code})"
    return str(exc)


@contextmanager
def failing(what: str) -> Iterator[None]:
    """Turn pyroute2/OS errors into a DataplaneError that says what was being done."""
    try:
        yield
    except DataplaneError:
        raise
    except NetlinkError as exc:
        raise DataplaneError(f"{what}: {_reason(exc)}", exc.code) from exc
    except OSError as exc:
        raise DataplaneError(f"{what}: {_reason(exc)}", exc.errno) from exc
    except ValueError as exc:  # malformed address, MAC or CIDR given by the caller
        raise DataplaneError(f"{what}: {exc}", errno.EINVAL) from exc


def attr(msg: Any, *path: str) -> Any:
    """A (nested) netlink attribute, e.g. attr(link, "linkinfo", "kind")."""
    return msg.get(path if len(path) > 1 else path[0])


def get_link(ipr: IPRoute, name: str) -> Any | None:
    """The link named `name`, or None (a 'get' is O(1), unlike a filtered dump)."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def ignore_missing(method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run a netlink delete; an entry or device that is already gone is not an error."""
    try:
        method(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.ESRCH):
            raise


def single(method: Any, fallback: Any, **kwargs: Any) -> Any | None:
    """One entry by key with a 'get' (kernel >= 5.8 for the FDB), else filtered from a dump."""
    try:
        return method("get", **kwargs)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENOENT:
            return None
        if exc.code not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    return next((m for m in fallback() if all(m.get(k) == v for k, v in kwargs.items()
                                               if k != "flags")), None)


def ipv4_addresses(ipr: IPRoute, index: int | None = None) -> dict[int, set[tuple[str, int]]]:
    """(address, prefixlen) pairs per ifindex (one device's only, if `index` is given)."""
    found: dict[int, set[tuple[str, int]]] = {}
    for m in ipr.addr("dump", family=AF_INET):
        if index is None or m["index"] == index:
            found.setdefault(m["index"], set()).add((m.get("address"), m["prefixlen"]))
    return found


def ensure_addresses(ipr: IPRoute, index: int, want: ipaddress.IPv4Interface) -> None:
    """Make `want` the only IPv4 address of the device (the device is ours)."""
    have = ipv4_addresses(ipr, index).get(index, set())
    target = (str(want.ip), want.network.prefixlen)
    for address, prefixlen in have - {target}:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    if target not in have:
        ipr.addr("add", index=index, address=target[0], prefixlen=target[1])


@contextmanager
def echoed(ipr: IPRoute) -> Iterator[None]:
    """Requests in the body ask the kernel to echo what they made (NLM_F_ECHO): a created
    device's message, with its ifindex and its veth peer's, saves a 'get'.

    Only for transient sockets and requests that cannot fail after the kernel echoed:
    pyroute2 (0.9) returns on the echo, so an error reported after it (as a failed
    IFLA_MASTER is) is lost, and the ACK that follows stays parked on the socket.
    """
    status = ipr.status  # pyroute2 reads the flag from here at each request
    status["nlm_echo"] = True
    try:
        yield
    finally:
        status["nlm_echo"] = False


@contextmanager
def ns_fd(path: str) -> Iterator[int]:
    """An open fd of the namespace file `path` (netlink moves devices by fd)."""
    with failing(f"cannot open namespace {path}"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


class Netlink:
    """Netlink sockets of one agent, one per namespace it programs; use from a single thread.

    Namespaces are named by path; `None` means the home (host) namespace: `host_ns` if given,
    otherwise the namespace of the thread that constructed the object.
    """

    def __init__(self, host_ns: str | None = None) -> None:
        self._home_label = f"host namespace {host_ns}" if host_ns else "host namespace"
        with failing(f"cannot open {self._home_label}"):
            # An fd, not a path: the home stays well defined even if no file names it.
            self._home_fd = os.open(host_ns or "/proc/thread-self/ns/net",
                                    os.O_RDONLY | os.O_CLOEXEC)
        self._sockets: dict[str | None, IPRoute] = {}
        self._rtnl: dict[str | None, Rtnl] = {}      # hand-packed requests (rtnl.py)
        self._indexes: dict[tuple[str | None, str], int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # of the transient sockets
        self._owner: int | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every cached socket and the home namespace fd (idempotent)."""
        if self._sockets:
            self._check_thread()
        for ipr in self._sockets.values():
            ipr.close()
        self._sockets.clear()
        for raw in self._rtnl.values():
            raw.close()
        self._rtnl.clear()
        self._indexes.clear()
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if self._home_fd >= 0:
            os.close(self._home_fd)
            self._home_fd = -1

    def forget(self, path: str | None) -> None:
        """Drop the cached socket of a namespace (call when the namespace is deleted)."""
        key = self._key(path)
        self._indexes = {k: v for k, v in self._indexes.items() if k[0] != key}
        ipr = self._sockets.pop(key, None)
        if ipr is not None:
            self._check_thread()
            ipr.close()
        raw = self._rtnl.pop(key, None)
        if raw is not None:
            raw.close()

    def index(self, path: str | None, name: str, refresh: bool = False) -> int | None:
        """ifindex of a device we keep (a bridge), remembered; None if there is none.

        A remembered index can be stale if someone recreated the device behind our back:
        callers that fail with it ask again with `refresh`.
        """
        key = (self._key(path), name)
        if refresh or key not in self._indexes:
            link = get_link(self.socket(path), name)
            if link is None:
                self._indexes.pop(key, None)
                return None
            self._indexes[key] = int(link["index"])
        return self._indexes[key]

    def remember(self, path: str | None, name: str, index: int | None) -> None:
        """Record (or, with None, drop) the ifindex of a device this process made or deleted."""
        key = (self._key(path), name)
        if index is None:
            self._indexes.pop(key, None)
        else:
            self._indexes[key] = index

    def knows(self, path: str | None) -> bool:
        """True if a socket of that namespace is cached (so the namespace existed)."""
        return self._key(path) in self._sockets

    @contextmanager
    def at_home(self) -> Iterator[None]:
        """Run the body with this thread in the home namespace (for /proc/sys/net files)."""
        self._check_thread()
        with netns.entered(self._home_fd):
            yield

    @contextmanager
    def fd(self, path: str | None) -> Iterator[int]:
        """An open fd of a namespace (None: the home namespace), to move devices into it."""
        if path is None:
            yield self._home_fd
        else:
            with ns_fd(path) as fd:
                yield fd

    def label(self, path: str | None) -> str:
        return self._home_label if path is None else f"namespace {path}"

    def socket(self, path: str | None) -> IPRoute:
        """The cached socket of a namespace, opened by stepping this thread into it."""
        ipr = self._cached(self._sockets, path, self._open)
        _drop_stale_replies(ipr)
        return ipr

    def rtnl(self, path: str | None) -> Rtnl:
        """The cached raw socket of a namespace we keep (see rtnl.py)."""
        return self._cached(self._rtnl, path, self._open_rtnl)

    def _cached(self, cache: dict[str | None, T], path: str | None,
                open_: Callable[[str | None], T]) -> T:
        self._check_thread()
        key = self._key(path)
        sock = cache.get(key)
        if sock is None:
            if self._home_fd < 0:
                raise DataplaneError("Kernel is closed")
            sock = cache[key] = open_(key)
        return sock

    def _open_rtnl(self, path: str | None) -> Rtnl:
        with netns.entered(self._home_fd if path is None else path):
            return Rtnl()

    @contextmanager
    def transient_rtnl(self, target: str | int) -> Iterator[Rtnl]:
        """A raw socket in a namespace we do not keep one for (a container's): its path or
        an open fd of it."""
        self._check_thread()
        with netns.entered(target):
            raw = Rtnl()
        try:
            yield raw
        finally:
            raw.close()

    @contextmanager
    def transient(self, path: str) -> Iterator[IPRoute]:
        """A socket in a namespace we do not keep one for (containers: one use each)."""
        self._check_thread()
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        ipr = self._open(path, self._loop)
        try:
            yield ipr
        finally:
            ipr.close()

    @contextmanager
    def reader(self, path: str | None) -> Iterator[IPRoute]:
        """The cached socket if there is one, else a transient one (never cache on a read:
        a cached socket would keep a container's namespace alive)."""
        if path is None or self.knows(path):
            yield self.socket(path)
        else:
            with self.transient(path) as ipr:
                yield ipr

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            # pyroute2 would silently open a new socket in *this* thread's namespace.
            raise DataplaneError("Kernel used from a second thread; it is bound to the thread "
                                 "that first used it")

    @staticmethod
    def _key(path: str | None) -> str | None:
        return None if path is None else os.path.abspath(path)

    def _open(self, path: str | None, loop: asyncio.AbstractEventLoop | None = None) -> IPRoute:
        if self._home_fd < 0:
            raise DataplaneError("Kernel is closed")
        with (failing(f"cannot open a netlink socket in {self.label(path)}"),
              netns.entered(self._home_fd if path is None else path)):
            # The socket binds to the namespace current at creation; ext_ack gets the
            # kernel's own explanation of failures.
            return IPRoute(ext_ack=True, use_event_loop=loop)


_STALE_LIMIT = 64


def _drop_stale_replies(ipr: IPRoute) -> None:
    """Empty the queue where pyroute2 (0.9) parks replies nobody waits for any more.

    A 'get' returns after the kernel's answer; the ACK that follows arrives once the request
    is over and lands in the socket's catch-all queue (sequence 0), which only readers of
    broadcasts consume. A long-lived socket would grow by one message per 'get' for ever.
    We never read broadcasts, so everything parked there is garbage.
    """
    queue = getattr(getattr(getattr(ipr, "asyncore", None), "msg_queue", None), "root", None)
    if queue is None or queue.qsize() < _STALE_LIMIT:
        return
    while not queue.empty():
        queue.get_nowait()
        queue.task_done()


def delete_link(k: Netlink, path: str | None, name: str) -> None:
    """Delete a device by name; no error if it does not exist (or went with its peer)."""
    ipr = k.socket(path)
    k.remember(path, name, None)
    with failing(f"cannot delete {name} in {k.label(path)}"):
        # RTM_DELLINK takes the name itself (IFLA_IFNAME): no 'get' first.
        ignore_missing(ipr.link, "del", ifname=name)
