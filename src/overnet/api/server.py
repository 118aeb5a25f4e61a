"""The agent's local API: HTTP+JSON on a unix socket (mode 0600).

Routes are thin: they parse the request, call one of the agent's services, and shape the
answer. Errors are `{"message": ...}` with the status of the OvernetError raised.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from typing import Any

from ..agent import hostsubnet
from ..agent.config import DOMAIN
from ..agent.daemon import Agent
from ..agent.endpoints import AttachRequest
from ..agent.networks import DEFAULT_DRIVER
from ..agent.state import Container, LocalEndpoint
from ..errors import Conflict, Invalid, NotFound, OvernetError, Unavailable
from ..store.base import StoreError
from ..store.records import NetworkRecord
from . import cliroute, cniroute, schema
from . import http as web

log = logging.getLogger(__name__)


def network_json(agent: Agent, net: NetworkRecord) -> dict:
    d = dataclasses.asdict(net)
    driver = agent.networks.driver(net)
    d["scope"] = driver.scope
    d["mtu"] = driver.mtu(net) if net.subnet else agent.mtu
    if driver.publishes:
        d["containers"] = [{"id": ep.container, "name": ep.name, "host": ep.host, "ip": ep.ip,
                            "mac": ep.mac, "runtime": ep.runtime}
                           for ep in agent.view.endpoints(net.id)]
    else:
        d["containers"] = [{"id": ep.container_id, "name": ep.name, "host": agent.name,
                            "ip": ep.ip, "mac": ep.mac, "runtime": ep.runtime}
                           for ep in agent.endpoints.on_network(net.id)]
    if driver.namespace(net):
        d["namespace"] = driver.namespace(net)
    return d


def endpoint_json(agent: Agent, ep: LocalEndpoint) -> dict:
    search = [f"{ep.network_name}.{DOMAIN}"] if ep.network_name else []
    return {
        "id": ep.id, "network": ep.network, "network_name": ep.network_name,
        "driver": ep.driver, "container_id": ep.container_id, "ifname": ep.ifname,
        "host_ifname": ep.host_ifname, "sandbox": ep.netns, "ip": ep.ip,
        "prefixlen": ep.prefixlen, "mac": ep.mac, "gateway": ep.gateway, "mtu": ep.mtu,
        "routes": [{"dst": "0.0.0.0/0", "gw": ep.gateway}] if ep.gateway else [],
        "dns": {"nameservers": [ep.gateway] if ep.gateway else [], "search": search,
                "domain": DOMAIN},
        "runtime": ep.runtime, "name": ep.name, "aliases": ep.aliases, "phase": ep.phase,
        "host": agent.name}


def container_json(agent: Agent, c: Container) -> dict:
    """Docker's inspect layout, so `inspect -f '{{ .NetworkSettings.SandboxKey }}'` works."""
    ep = agent.containers.endpoint(c)
    nets = {c.network_name: {"network": c.network, "network_name": c.network_name,
                             "endpoint": ep.id if ep else "", "ip": ep.ip if ep else "",
                             "prefixlen": ep.prefixlen if ep else 0,
                             "mac": ep.mac if ep else "", "service": c.service,
                             "host_ifname": ep.host_ifname if ep else "",
                             "driver": agent.networks.get(c.network).driver
                             if agent.networks.get(c.network) else ""}} if c.network else {}
    return {
        "Id": c.id, "Name": c.name, "Created": c.created, "Host": agent.name,
        "Config": {"Hostname": c.hostname, "Cmd": c.cmd, "Env": c.env, "Tty": c.tty,
                   "AutoRemove": c.auto_remove, "Links": c.links, "Privileged": c.privileged},
        "State": {"Status": c.status, "Running": c.status == "running", "Pid": c.pid,
                  "ExitCode": c.exit_code, "StartedAt": c.started, "FinishedAt": c.finished},
        "NetworkSettings": {
            "SandboxKey": c.netns, "IPAddress": ep.ip if ep else "",
            "MacAddress": ep.mac if ep else "", "Networks": nets,
            "NetworkSetupSeconds": c.net_setup_seconds,
            "NetworkAttachSeconds": c.net_attach_seconds},
        "HostsPath": c.hosts_file,
        "Spec": dataclasses.asdict(agent.containers.spec(c)),
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


def body(request: web.Request, spec: schema.Spec, what: str) -> dict:
    """The request's JSON body, typed and checked against `spec` (Invalid names the field)."""
    return schema.parse_body(request.body, spec, what)


def _flag(request: web.Request, name: str) -> bool:
    return schema.query_bool(request.query, name)


def make_app(agent: Agent) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    _network_routes(routes, agent)
    _container_routes(routes, agent)
    _endpoint_routes(routes, agent)
    _subnet_routes(routes, agent)
    _observe_routes(routes, agent)
    cniroute.add_routes(routes, error_response)    # the compiled overnet-cni's calls
    cliroute.add_routes(routes, error_response)    # the compiled overnet's

    @routes.get("/info")
    async def info(request: web.Request) -> web.Response:
        return _json({"name": agent.name, "advertise": agent.cfg.advertise, "mtu": agent.mtu,
                      "store": agent.cfg.store, "state_dir": agent.cfg.state_dir,
                      "default_network": agent.default_net[1],
                      "containers": sum(c.status == "running"
                                        for c in agent.containers.containers.values()),
                      "endpoints": len(agent.endpoints.local),
                      "loops": agent.supervisor.running(),
                      "loop_restarts": agent.supervisor.restarts})

    @routes.get("/services")
    async def services(request: web.Request) -> web.Response:
        await agent.in_scope(*agent.networks.all())
        return _json([dataclasses.asdict(s) for s in agent.view.services()])

    return routes


def _network_routes(routes: web.RouteTableDef, agent: Agent) -> None:
    @routes.get("/networks")
    async def networks(request: web.Request) -> web.Response:
        await agent.in_scope(*agent.networks.all())
        return _json([network_json(agent, n) for n in agent.networks.all()])

    @routes.post("/networks")
    async def create_network(request: web.Request) -> web.Response:
        b = body(request, schema.NETWORK_CREATE, "network")
        net = await agent.networks.create(b["name"], b["driver"] or DEFAULT_DRIVER,
                                          b["subnet"] or None, b["gateway"] or None)
        return _json(network_json(agent, net), 201)

    @routes.get("/networks/{ref}")
    async def get_network(request: web.Request) -> web.Response:
        net = agent.networks.find(request.match_info["ref"])
        await agent.in_scope(net)
        return _json(network_json(agent, net))

    @routes.delete("/networks/{ref}")
    async def rm_network(request: web.Request) -> web.Response:
        net = agent.networks.find(request.match_info["ref"])
        local = [c.name for c in agent.containers.containers.values()
                 if c.network == net.id and agent.containers.endpoint(c)]
        if local:
            raise Conflict(f"network {net.name} has attached container(s) "
                           f"{', '.join(local)}: remove them first")
        net = await agent.networks.remove(net.id)
        agent.allocator.forget(net.id)
        return _json({"id": net.id, "name": net.name})


def _container_routes(routes: web.RouteTableDef, agent: Agent) -> None:
    cs = agent.containers

    @routes.get("/containers")
    async def containers(request: web.Request) -> web.Response:
        show_all = _flag(request, "all")
        listed = sorted(cs.containers.values(), key=lambda c: c.created, reverse=True)
        return _json([container_json(agent, c) for c in listed
                      if show_all or c.status == "running"])

    @routes.post("/containers")
    async def create_container(request: web.Request) -> web.Response:
        c = await cs.create(body(request, schema.CONTAINER_CREATE, "container"))
        return _json(container_json(agent, c), 201)

    @routes.get("/containers/{ref}")
    async def get_container(request: web.Request) -> web.Response:
        return _json(container_json(agent, cs.find(request.match_info["ref"])))

    @routes.post("/containers/{ref}/started")
    async def started(request: web.Request) -> web.Response:
        pid = body(request, schema.STARTED, "start report")["pid"]
        return _json(container_json(agent, await cs.started(request.match_info["ref"], pid)))

    @routes.post("/containers/{ref}/exited")
    async def exited(request: web.Request) -> web.Response:
        """A foreground container's exit status, which only the CLI (its parent) knows."""
        code = body(request, schema.EXITED, "exit report")["code"]
        c = cs.find(request.match_info["ref"])
        if c.status == "exited" and c.exit_code is None:
            c.exit_code = code
            agent.state.save(c)
        return _json(container_json(agent, c))

    @routes.post("/containers/{ref}/stop")
    async def stop(request: web.Request) -> web.Response:
        timeout = schema.query_float(request.query, "t", 10.0, maximum=3600.0)
        c = await cs.stop(request.match_info["ref"], timeout)
        return _json(container_json(agent, c))

    @routes.delete("/containers/{ref}")
    async def rm(request: web.Request) -> web.Response:
        c = await cs.remove(request.match_info["ref"], _flag(request, "force"))
        return _json({"id": c.id, "name": c.name})

    @routes.get("/containers/{ref}/logs")
    async def logs(request: web.Request) -> web.Response:
        return web.Response(cs.logs(request.match_info["ref"]),
                            content_type="application/octet-stream")


def _endpoint_routes(routes: web.RouteTableDef, agent: Agent) -> None:
    eps = agent.endpoints

    @routes.post("/endpoints")
    async def attach(request: web.Request) -> web.Response:
        b = body(request, schema.ENDPOINT_ATTACH, "endpoint")
        req = AttachRequest(**{k: v for k, v in b.items() if v is not None})
        return _json(endpoint_json(agent, await eps.attach(req)), 201)

    @routes.get("/endpoints")
    async def list_endpoints(request: web.Request) -> web.Response:
        runtime = request.query.get("runtime")
        return _json([endpoint_json(agent, ep) for ep in eps.local.values()
                      if runtime in (None, ep.runtime)])

    @routes.get("/endpoints/{cid}/{ifname}")
    async def get_endpoint(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(endpoint_json(agent, eps.get(m["cid"], m["ifname"])))

    @routes.get("/endpoints/{cid}/{ifname}/check")
    async def check(request: web.Request) -> web.Response:
        m = request.match_info
        problems = await eps.check(m["cid"], m["ifname"])
        return _json({"ok": not problems, "problems": problems})

    @routes.delete("/endpoints/{cid}/{ifname}")
    async def detach(request: web.Request) -> web.Response:
        m = request.match_info
        return _json({"removed": await eps.detach(m["cid"], m["ifname"])})

    @routes.post("/endpoints/gc")
    async def gc(request: web.Request) -> web.Response:
        b = body(request, schema.ENDPOINT_GC, "endpoint gc")
        gone = await eps.gc(b["runtime"], {(k["container_id"], k["ifname"]) for k in b["keep"]})
        return _json({"removed": [{"container_id": c, "ifname": i} for c, i in gone]})


def _subnet_routes(routes: web.RouteTableDef, agent: Agent) -> None:
    """Host subnets (flannel-compatible): agent/hostsubnet.py does the work."""
    def prefix() -> str:
        return agent.cfg.subnet_prefix.rstrip("/")

    @routes.get("/subnet/config")
    async def subnet_config(request: web.Request) -> web.Response:
        return _json(await hostsubnet.get_config(agent.store, prefix()))

    @routes.put("/subnet/config")
    async def put_subnet_config(request: web.Request) -> web.Response:
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            raise Invalid("request body is not JSON") from None
        if not isinstance(data, dict):
            raise Invalid("request body must be a JSON object")
        return _json(await hostsubnet.put_config(agent.store, prefix(), data))

    @routes.get("/subnet/lease")
    async def subnet_lease(request: web.Request) -> web.Response:
        if agent.hostsubnet is None:
            raise NotFound(f"host subnets are off on {agent.name}: start its agent with "
                           "--flannel")
        return _json(agent.hostsubnet.info())

    @routes.get("/subnet/leases")
    async def subnet_leases(request: web.Request) -> web.Response:
        return _json(await hostsubnet.list_leases(agent.store, prefix()))


def _observe_routes(routes: web.RouteTableDef, agent: Agent) -> None:
    """Health, events, doctor and topology: src/overnet/observe/routes.py."""
    from ..observe.routes import add_routes
    add_routes(routes, agent)


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
