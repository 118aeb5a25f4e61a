"""What happens on this host and in the cluster, as `docker events` shows it: a bounded ring
of events in memory, read by sequence number (long polling) or from a point in time.

Emitting is a dict and a deque append: cheap enough for any path of the agent."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

TYPES = ("container", "network", "peer", "host", "lease")
RING = 2048


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float
    type: str            # one of TYPES
    action: str          # create, destroy, attach, detach, start, die, programmed, ...
    actor: str           # what it is about: a container, network, host or lease name
    host: str            # the host that saw it
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    def __init__(self, host: str = "", size: int = RING, clock=time.time) -> None:
        self.host = host
        self.clock = clock
        self.ring: deque[Event] = deque(maxlen=size)
        self.last = 0                      # sequence number of the newest event
        self._waiters: list[asyncio.Future] = []

    def emit(self, type_: str, action: str, actor: str, **attrs: Any) -> Event:
        assert type_ in TYPES, type_
        self.last += 1
        ev = Event(self.last, self.clock(), type_, action, actor, self.host,
                   {k: v for k, v in attrs.items() if v not in (None, "")})
        self.ring.append(ev)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        return ev

    def select(self, after: int = 0, since: float | None = None, until: float | None = None,
               types: set[str] | None = None) -> list[Event]:
        """Events with seq > after (and time in [since, until]), oldest first."""
        return [e for e in self.ring if e.seq > after
                and (since is None or e.time >= since) and (until is None or e.time <= until)
                and (not types or e.type in types)]

    async def wait(self, after: int, timeout: float, types: set[str] | None = None,
                   since: float | None = None) -> list[Event]:
        """Long poll: the matching events after `after`, waiting up to `timeout` seconds
        for the first one."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = self.select(after, since, None, types)
            left = deadline - asyncio.get_running_loop().time()
            if found or left <= 0:
                return found
            after = max(after, self.last)     # what is there now does not match: skip it
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                return []


def endpoint_attrs(ep: Any) -> dict[str, Any]:
    """What an attach or detach event says about its endpoint (a LocalEndpoint)."""
    return {"container": ep.container_id, "name": ep.name, "ifname": ep.ifname, "ip": ep.ip,
            "runtime": ep.runtime}
