"""The agent's own API routes called in-process: no socket, no HTTP parse, the same
validation and answers (api/cniroute.py and api/cliroute.py, the compiled fronts' agent
sides, make their requests through it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from . import http as web
from . import wire
from .client import Client, answer

OnError = Callable[[web.Request, Exception], web.Response]


class LocalApi:
    """The agent's own routes, called in-process (no socket, no HTTP parse)."""

    def __init__(self, routes: web.RouteTableDef, on_error: OnError) -> None:
        self.routes = routes
        self.on_error = on_error

    async def exchange(self, method: str, target: str, payload: bytes | None
                       ) -> tuple[int, str, bytes]:
        """What Client.exchange returns for the same request over the socket."""
        path, _, query = target.partition("?")
        request = web.Request(method, path, dict(parse_qsl(query)), payload or b"")
        response = await web.dispatch(self.routes, self.on_error, request)
        return response.status, web.REASONS.get(response.status, ""), response.body

    async def call(self, method: str, target: str, body: Any = None) -> Any:
        payload = wire.dumps(body).encode() if body is not None else None
        return answer(*await self.exchange(method, target, payload))

    def client(self) -> Client:
        return LoopClient(self, asyncio.get_running_loop())


class LoopClient(Client):
    """A Client for plugin code running in a worker thread: each request is answered by the
    agent's routes on its event loop."""

    def __init__(self, local: LocalApi, loop: asyncio.AbstractEventLoop) -> None:
        self.path = "(in-process)"
        self.timeout = 0.0
        self.local = local
        self.loop = loop

    def exchange(self, method: str, target: str, payload: bytes | None
                 ) -> tuple[int, str, bytes]:
        future = asyncio.run_coroutine_threadsafe(
            self.local.exchange(method, target, payload), self.loop)
        return future.result()
