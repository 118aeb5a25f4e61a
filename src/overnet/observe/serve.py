"""The metrics address (`overnet agent --metrics-addr HOST:PORT`): /metrics, /healthz and
/readyz over plain HTTP, served by the agent's own small HTTP server on its event loop."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from ..api import http as web
from ..errors import Invalid
from . import health


def parse_addr(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        number = int(port)
        if not sep or not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise Invalid(f"invalid --metrics-addr {value!r}: expected IP:PORT, e.g. "
                      "127.0.0.1:9091") from None
    return host.strip("[]"), number


def health_routes(routes: web.RouteTableDef, agent: Any) -> None:
    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(b"ok\n", content_type="text/plain")

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        r = await health.readiness(agent)
        return web.Response.json(r, 200 if r["ready"] else 503)


def metrics_app(agent: Any) -> web.RouteTableDef:
    # here, not at the top: the agent's API serves health_routes too, and only a metrics
    # address needs prometheus_client (~2 MB of an agent's resident memory)
    from prometheus_client import CONTENT_TYPE_LATEST

    from . import metrics

    routes = web.RouteTableDef()
    reg = metrics.registry(agent)
    health_routes(routes, agent)

    @routes.get("/metrics")
    async def scrape(request: web.Request) -> web.Response:
        return web.Response(metrics.exposition(reg), content_type=CONTENT_TYPE_LATEST)
    return routes


def _error(request: web.Request, e: Exception) -> web.Response:
    return web.Response.json({"message": f"internal error: {e}"}, 500)


async def serve_metrics(agent: Any, addr: str) -> web.Server:
    """Listen on `addr` (Invalid, one line, if it cannot), then leave the server to the
    agent's supervisor: stopping the agent closes it."""
    host, port = parse_addr(addr)
    server = web.Server(metrics_app(agent), _error)
    try:
        await server.start_tcp(host, port)
    except OSError as e:
        raise Invalid(f"--metrics-addr {addr}: cannot listen there ({e.strerror})") from None
    agent.supervisor.start("metrics", lambda: _hold(server))
    return server


async def _hold(server: web.Server) -> None:
    try:
        await asyncio.Event().wait()        # until the supervisor cancels it
    finally:
        await server.close()
