"""The agent API's routes for seeing inside: /healthz, /readyz, /events, /doctor,
/doctor/path and /topology (called from api/server.py's _observe_routes)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..api import http as web
from ..errors import Invalid
from . import doctor, path
from .events import TYPES
from .serve import health_routes
from .topology import topology

MAX_WAIT = 60.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response.json(data, status)


def _types(value: str | None) -> set[str] | None:
    if not value:
        return None
    types = set(value.split(","))
    wrong = sorted(types - set(TYPES))
    if wrong:
        raise Invalid(f"invalid event type {wrong[0]!r}: one of {', '.join(TYPES)}")
    return types


def _number(query: dict[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise Invalid(f"invalid {name} {raw!r}: expected a number") from None


def _findings(found: list[doctor.Finding]) -> dict[str, Any]:
    return {"ok": all(f.ok for f in found), "findings": [f.to_json() for f in found]}


async def _ndjson(steps: AsyncIterator[doctor.Finding | str]) -> AsyncIterator[bytes]:
    ok = True
    try:
        async for step in steps:
            if isinstance(step, str):
                line: dict[str, Any] = {"progress": step}
            else:
                ok = ok and step.ok
                line = {"finding": step.to_json()}
            yield json.dumps(line).encode() + b"\n"
    except Exception as e:   # noqa: BLE001 - the status line is sent: say it in the body
        ok = False
        yield json.dumps({"message": f"doctor failed: {e}"}).encode() + b"\n"
    yield json.dumps({"ok": ok}).encode() + b"\n"


def add_routes(routes: web.RouteTableDef, agent: Any) -> None:
    health_routes(routes, agent)
    agent.observer.on_doctor = lambda key, value: path.answer(agent, key, value)

    @routes.get("/events")
    async def events(request: web.Request) -> web.Response:
        """Long poll: events after sequence number `after` (or from time `since`), waiting
        up to `wait` seconds for the first; `until` (a time) ends a replay."""
        q = request.query
        after = int(_number(q, "after") or 0)
        since, until = _number(q, "since"), _number(q, "until")
        wait = min(_number(q, "wait") or 0.0, MAX_WAIT)
        types = _types(q.get("type"))
        log = agent.events
        if until is not None or wait <= 0:
            found = log.select(after, since, until, types)
        else:
            found = await log.wait(after, wait, types, since)
        last = found[-1].seq if found else max(after, log.last)
        return _json({"events": [e.to_json() for e in found], "last": last,
                      "now": time.time()})

    @routes.get("/doctor")
    async def host_doctor(request: web.Request) -> web.Response:
        return _json(_findings(await doctor.check_host(agent)))

    @routes.get("/doctor/path")
    async def path_doctor(request: web.Request) -> web.Response:
        """With ?stream=1: newline-delimited JSON, {"progress": ...} and {"finding": ...}
        lines as they come, then {"ok": ...}."""
        a, b = request.query.get("a"), request.query.get("b")
        if not a or not b:
            raise Invalid("doctor/path needs two containers: ?a=NAME&b=NAME")
        if request.query.get("stream") in ("1", "true"):
            return web.Response(stream=_ndjson(path.steps(agent, a, b)),
                                content_type="application/x-ndjson")
        return _json(_findings(await path.walk(agent, a, b)))

    @routes.get("/topology")
    async def topo(request: web.Request) -> web.Response:
        await agent.in_scope(*agent.networks.all())
        return _json(await topology(agent))

