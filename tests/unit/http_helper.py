"""The agent's HTTP server on a temporary unix socket, in a thread, and raw exchanges with it
(for tests that send what no well-behaved client would)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from overnet.api import http
from overnet.errors import NotFound


def thing_routes() -> http.RouteTableDef:
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

    return routes


def on_error(request, e):
    status = getattr(e, "status", 500)
    return http.Response.json({"message": getattr(e, "message", str(e))}, status)


@contextmanager
def serving(path: str, routes: http.RouteTableDef | None = None) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    srv = http.Server(routes or thing_routes(), on_error)
    loop.run_until_complete(srv.start_unix(path))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(srv.close())
        loop.close()


def exchange(path: str, data: bytes, timeout: float = 10) -> tuple[int | None, dict, bytes]:
    """Send `data`, end our side, read to the end: (status or None if nothing came back,
    headers, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server answered and closed before reading everything
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    if not raw:
        return None, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(status), headers, body


def message(body: bytes) -> str:
    return json.loads(body)["message"]
