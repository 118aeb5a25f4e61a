"""The agent's small HTTP server and the CLI's client, over a real unix socket."""

import asyncio
import threading

import pytest

from overnet.api import http
from overnet.api.client import AgentUnreachable, ApiError, Client, unreachable
from overnet.errors import NotFound


@pytest.fixture
def server(tmp_path):
    routes = http.RouteTableDef()

    @routes.get("/things/{name}")
    async def get(request):
        if request.match_info["name"] == "ghost":
            raise NotFound("no such thing: ghost")
        return http.Response.json({"name": request.match_info["name"],
                                   "q": request.query.get("q")})

    @routes.post("/things")
    async def post(request):
        return http.Response.json(await request.json(), 201)

    @routes.get("/boom")
    async def boom(request):
        raise RuntimeError("kaput")

    def on_error(request, e):
        status = getattr(e, "status", 500)
        return http.Response.json({"message": getattr(e, "message", str(e))}, status)

    path = str(tmp_path / "api.sock")
    loop = asyncio.new_event_loop()
    srv = http.Server(routes, on_error)
    loop.run_until_complete(srv.start_unix(path))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield Client("unix://" + path, timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.run_until_complete(srv.close())
    loop.close()


def test_round_trips(server):
    assert server.get("/things/a%20b", q="1") == {"name": "a b", "q": "1"}
    assert server.post("/things", {"x": [1, 2]}) == {"x": [1, 2]}


def test_errors_become_messages(server):
    with pytest.raises(ApiError) as e:
        server.get("/things/ghost")
    assert e.value.status == 404 and e.value.message == "no such thing: ghost"
    with pytest.raises(ApiError) as e:
        server.get("/boom")
    assert e.value.status == 500 and "kaput" in e.value.message
    with pytest.raises(ApiError) as e:
        server.get("/nowhere")
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        server.delete("/things")
    assert e.value.status == 405


def test_big_body(server):
    data = {"k": "x" * 300_000}
    assert server.post("/things", data) == data


def test_no_agent(tmp_path):
    with pytest.raises(AgentUnreachable) as e:
        Client(f"unix://{tmp_path}/none.sock").get("/info")
    assert e.value.message == (f"cannot reach the agent at unix://{tmp_path}/none.sock: no such "
                               "socket (is the agent running? Start it with: overnet agent "
                               "--store etcd://HOST:2379 --name NAME --advertise ADDRESS)")


def test_agent_socket_not_ours():
    # What a non-root user gets from the root-only socket (for real: test_containment.py).
    assert unreachable("/run/overnet/overnet.sock", PermissionError(13, "x")) == (
        "cannot reach the agent at unix:///run/overnet/overnet.sock: permission denied "
        "(run as root)")
