"""The plugin socket Docker finds in /run/docker/plugins: one POST route per method.

Docker's plugin protocol: POST /Plugin.Activate, /NetworkDriver.*, /IpamDriver.* with a JSON
body (often empty); the answer is JSON, and an error is `{"Err": "..."}`, which Docker shows
the user as the reason the command failed.
"""

from __future__ import annotations

import json
import logging
import os
import socket

from ..api.http import Request, Response, RouteTableDef, Server
from ..errors import Conflict, Invalid, OvernetError
from ..store.base import StoreError
from .bindings import Bindings
from .dockerapi import DEFAULT_DOCKER_SOCKET, DockerApi
from .driver import NetworkDriver
from .ipam import Ipam

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/docker/plugins/overnet.sock"
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"


class DockerPlugin:
    def __init__(self, agent, docker_socket: str = DEFAULT_DOCKER_SOCKET) -> None:
        self.agent = agent
        self.bindings = Bindings(agent, DockerApi(docker_socket))
        self.driver = NetworkDriver(agent, self.bindings)
        self.ipam = Ipam(agent, self.bindings)
        self.server: Server | None = None

    def methods(self) -> dict:
        d, i = self.driver, self.ipam
        return {
            "Plugin.Activate": _activate,
            "NetworkDriver.GetCapabilities": d.capabilities,
            "NetworkDriver.CreateNetwork": d.create_network,
            "NetworkDriver.DeleteNetwork": d.delete_network,
            "NetworkDriver.CreateEndpoint": d.create_endpoint,
            "NetworkDriver.EndpointOperInfo": d.endpoint_oper_info,
            "NetworkDriver.DeleteEndpoint": d.delete_endpoint,
            "NetworkDriver.Join": d.join,
            "NetworkDriver.Leave": d.leave,
            "NetworkDriver.DiscoverNew": d.nothing,
            "NetworkDriver.DiscoverDelete": d.nothing,
            "NetworkDriver.ProgramExternalConnectivity": d.nothing,
            "NetworkDriver.RevokeExternalConnectivity": d.nothing,
            "IpamDriver.GetCapabilities": i.capabilities,
            "IpamDriver.GetDefaultAddressSpaces": i.default_address_spaces,
            "IpamDriver.RequestPool": i.request_pool,
            "IpamDriver.ReleasePool": i.release_pool,
            "IpamDriver.RequestAddress": i.request_address,
            "IpamDriver.ReleaseAddress": i.release_address,
        }

    def routes(self) -> RouteTableDef:
        routes = RouteTableDef()
        for method, handler in self.methods().items():
            routes.post("/" + method)(_route(method, handler))
        return routes

    async def call(self, method: str, body: dict | None = None) -> dict:
        """One method as Docker calls it, answer or {"Err": ...} (for tests and tools)."""
        handler = self.methods().get(method)
        if handler is None:
            return {"Err": f"unknown method {method!r}"}
        try:
            return await handler(body or {})
        except Exception as e:  # noqa: BLE001 - every error is an answer to Docker
            return {"Err": _message(method, e)}

    async def start(self, path: str = DEFAULT_SOCKET) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            if _answers(path):
                raise Conflict(f"another plugin is already serving on {path}")
            os.unlink(path)    # left by an agent that died
        self.server = Server(self.routes(), _error)
        old = os.umask(0o177)
        try:
            await self.server.start_unix(path)
        finally:
            os.umask(old)
        self.path = path
        log.info("Docker plugin serving on unix://%s", path)

    async def close(self) -> None:
        await self.driver.close()
        if self.server is not None:
            await self.server.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.server = None


async def _activate(body: dict) -> dict:
    return {"Implements": ["NetworkDriver", "IpamDriver"]}


def _route(method: str, handler):
    async def route(request: Request) -> Response:
        try:
            body = json.loads(request.body) if request.body.strip() else {}
        except ValueError:
            raise Invalid(f"{method}: the request body is not JSON") from None
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise Invalid(f"{method}: expected a JSON object, got {type(body).__name__}")
        log.debug("%s %s", method, body)
        try:
            return _answer(await handler(body))
        except Exception as e:  # noqa: BLE001 - every error is an answer to Docker
            return _answer({"Err": _message(method, e)})
    return route


def _message(method: str, e: Exception) -> str:
    if isinstance(e, OvernetError):
        return e.message
    if isinstance(e, StoreError):
        return f"the overnet store is unavailable: {e}"
    log.error("%s failed", method, exc_info=e)
    return f"{method}: internal error: {e}"


def _answer(data: dict) -> Response:
    if data.get("Err"):
        log.info("answering Docker with an error: %s", data["Err"])
    return Response(json.dumps(data).encode(), 200, CONTENT_TYPE)


def _error(request: Request, e: Exception) -> Response:
    return _answer({"Err": _message(request.path.lstrip("/"), e)})


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
