"""The agent's local API: HTTP+JSON on a unix socket (mode 0600).

Routes are thin: they parse the request, call the agent, and shape the answer. Errors are
`{"message": ...}` with the status of the OvernetError raised.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from typing import Any

from . import http as web

from ..agent import hostsubnet
from ..agent.daemon import Agent
from ..agent.state import Container
from ..errors import Conflict, Invalid, OvernetError, Unavailable
from ..store.base import StoreError
from ..store.records import NetworkRecord

log = logging.getLogger(__name__)

def network_json(agent: Agent, net: NetworkRecord) -> dict:
    d = dataclasses.asdict(net)
    d["scope"] = "global" if net.driver == "overlay" else "local"
    d["containers"] = [
        {"id": ep.container, "name": ep.name, "host": ep.host, "ip": ep.ip, "mac": ep.mac}
        for ep in agent.view.endpoints(net.id)] if net.driver == "overlay" else [
        {"id": c.id, "name": c.name, "host": agent.name, "ip": c.net.ip, "mac": c.net.mac}
        for c in agent.containers.values() if c.net and c.net.network == net.id and c.net.ip]
    if net.driver == "overlay":
        d["namespace"] = agent.overlay.ns_path(net.id)
    return d


def container_json(agent: Agent, c: Container) -> dict:
    """Docker's inspect layout, so `inspect -f '{{ .NetworkSettings.SandboxKey }}'` works."""
    net = c.net
    return {
        "Id": c.id, "Name": c.name, "Created": c.created, "Host": agent.name,
        "Config": {"Hostname": c.hostname, "Cmd": c.cmd, "Env": c.env, "Tty": c.tty,
                   "AutoRemove": c.auto_remove, "Links": c.links},
        "State": {"Status": c.status, "Running": c.status == "running", "Pid": c.pid,
                  "ExitCode": c.exit_code, "StartedAt": c.started, "FinishedAt": c.finished},
        "NetworkSettings": {
            "SandboxKey": c.netns, "IPAddress": net.ip if net else "",
            "MacAddress": net.mac if net else "",
            "Networks": {net.network_name: dataclasses.asdict(net)} if net else {},
            "NetworkSetupSeconds": c.net_setup_seconds},
        "HostsPath": c.hosts_file,
        "Spec": dataclasses.asdict(agent._spec(c)),
    }


def _answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response.json(data, status)


def make_app(agent: Agent) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    async def body(request: web.Request) -> dict:
        try:
            data = await request.json() if request.can_read_body else {}
        except ValueError:
            raise Invalid("request body is not JSON") from None
        if not isinstance(data, dict):
            raise Invalid("request body must be a JSON object")
        return data

    @routes.get("/info")
    async def info(request: web.Request) -> web.Response:
        return _json({"name": agent.name, "advertise": agent.cfg.advertise, "mtu": agent.mtu,
                      "store": agent.cfg.store, "state_dir": agent.cfg.state_dir,
                      "default_network": agent.default_net[1],
                      "containers": sum(c.status == "running"
                                        for c in agent.containers.values())})

    @routes.get("/networks")
    async def networks(request: web.Request) -> web.Response:
        return _json([network_json(agent, n) for n in agent.networks()])

    @routes.post("/networks")
    async def create_network(request: web.Request) -> web.Response:
        b = await body(request)
        net = await agent.create_network(str(b.get("name", "")), b.get("driver") or "overlay",
                                         b.get("subnet"), b.get("gateway"))
        return _json(network_json(agent, net), 201)

    @routes.get("/networks/{ref}")
    async def get_network(request: web.Request) -> web.Response:
        return _json(network_json(agent, agent.find_network(request.match_info["ref"])))

    @routes.delete("/networks/{ref}")
    async def rm_network(request: web.Request) -> web.Response:
        net = await agent.remove_network(request.match_info["ref"])
        return _json({"id": net.id, "name": net.name})

    @routes.get("/services")
    async def services(request: web.Request) -> web.Response:
        return _json([dataclasses.asdict(s) for s in agent.view.services()])

    @routes.get("/containers")
    async def containers(request: web.Request) -> web.Response:
        show_all = request.query.get("all") in ("1", "true")
        cs = sorted(agent.containers.values(), key=lambda c: c.created, reverse=True)
        return _json([container_json(agent, c) for c in cs
                      if show_all or c.status == "running"])

    @routes.post("/containers")
    async def create_container(request: web.Request) -> web.Response:
        c = await agent.create_container(await body(request))
        return _json(container_json(agent, c), 201)

    @routes.get("/containers/{ref}")
    async def get_container(request: web.Request) -> web.Response:
        return _json(container_json(agent, agent.find_container(request.match_info["ref"])))

    @routes.post("/containers/{ref}/started")
    async def started(request: web.Request) -> web.Response:
        b = await body(request)
        pid = b.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            raise Invalid(f"invalid pid {pid!r}")
        c = await agent.container_started(request.match_info["ref"], pid)
        return _json(container_json(agent, c))

    @routes.post("/containers/{ref}/exited")
    async def exited(request: web.Request) -> web.Response:
        """A foreground container's exit status, which only the CLI (its parent) knows."""
        code = (await body(request)).get("code")
        if not isinstance(code, int):
            raise Invalid(f"invalid exit code {code!r}")
        c = agent.find_container(request.match_info["ref"])
        if c.status == "exited" and c.exit_code is None:
            c.exit_code = code
            agent.state.save(c)
        return _json(container_json(agent, c))

    @routes.post("/containers/{ref}/stop")
    async def stop(request: web.Request) -> web.Response:
        timeout = float(request.query.get("t", "10"))
        c = await agent.stop_container(request.match_info["ref"], timeout)
        return _json(container_json(agent, c))

    @routes.delete("/containers/{ref}")
    async def rm(request: web.Request) -> web.Response:
        force = request.query.get("force") in ("1", "true")
        c = await agent.remove_container(request.match_info["ref"], force)
        return _json({"id": c.id, "name": c.name})

    @routes.get("/containers/{ref}/logs")
    async def logs(request: web.Request) -> web.Response:
        return web.Response(agent.logs(request.match_info["ref"]),
                            content_type="application/octet-stream")

    # host subnets (flannel-compatible): agent/hostsubnet.py does the work
    @routes.get("/subnet/config")
    async def subnet_config(request: web.Request) -> web.Response:
        return _json(await hostsubnet.get_config(agent))

    @routes.put("/subnet/config")
    async def put_subnet_config(request: web.Request) -> web.Response:
        return _json(await hostsubnet.put_config(agent, await body(request)))

    @routes.get("/subnet/lease")
    async def subnet_lease(request: web.Request) -> web.Response:
        return _json(hostsubnet.get_lease(agent))

    @routes.get("/subnet/leases")
    async def subnet_leases(request: web.Request) -> web.Response:
        return _json(await hostsubnet.list_leases(agent))

    return routes


def error_response(request: web.Request, e: Exception) -> web.Response:
    if isinstance(e, OvernetError):
        return _json({"message": e.message}, e.status)
    if isinstance(e, StoreError):
        return _json({"message": str(e)}, Unavailable.status)
    log.error("%s %s failed", request.method, request.path, exc_info=e)
    return _json({"message": f"internal error: {e}"}, 500)


async def serve(agent: Agent, socket_path: str) -> web.Server:
    os.makedirs(os.path.dirname(socket_path) or ".", exist_ok=True)
    if os.path.exists(socket_path):
        if _answers(socket_path):
            raise Conflict(f"another agent is already serving on {socket_path}")
        os.unlink(socket_path)   # left by an agent that died
    server = web.Server(make_app(agent), error_response)
    old = os.umask(0o177)
    try:
        await server.start_unix(socket_path)
    finally:
        os.umask(old)
    os.chmod(socket_path, 0o600)
    return server
