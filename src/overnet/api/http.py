"""A small HTTP/1.1 server on asyncio streams, for the agent's unix-socket API.

The API is a handful of JSON routes with one client at a time per connection; a web framework
would cost the agent ~25 MB of resident memory and a slower start. Names follow aiohttp's
(`RouteTableDef`, `Request`, `Response`) so route code reads the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

MAX_BODY = 8 << 20
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes = b""
    match_info: dict[str, str] = field(default_factory=dict)
    keep_alive: bool = True

    @property
    def can_read_body(self) -> bool:
        return bool(self.body)

    async def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"

    @classmethod
    def json(cls, data: Any, status: int = 200) -> "Response":
        return cls(json.dumps(data).encode(), status)


Handler = Callable[[Request], Awaitable[Response]]


class RouteTableDef:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

        def register(handler: Handler) -> Handler:
            self.routes.append((method, regex, handler))
            return handler
        return register

    def get(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("GET", pattern)

    def post(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("POST", pattern)

    def put(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("PUT", pattern)

    def delete(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("DELETE", pattern)

    def find(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """(handler, path parameters, whether the path exists with another method)."""
        other = False
        for m, regex, handler in self.routes:
            match = regex.match(path)
            if match:
                if m == method:
                    return handler, {k: unquote(v) for k, v in match.groupdict().items()}, True
                other = True
        return None, {}, other


class Server:
    def __init__(self, routes: RouteTableDef,
                 on_error: Callable[[Request, Exception], Response]) -> None:
        self.routes = routes
        self.on_error = on_error
        self._server: asyncio.AbstractServer | None = None

    async def start_unix(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._connection, path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                response, keep_alive = await self._dispatch(request), request.keep_alive
                writer.write(_encode(response, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except _BadRequest as e:
            writer.write(_encode(Response.json({"message": str(e)}, e.status), False))
        finally:
            writer.close()

    async def _dispatch(self, request: Request) -> Response:
        handler, params, exists = self.routes.find(request.method, request.path)
        if handler is None:
            status = 405 if exists else 404
            return Response.json({"message": f"{request.method} {request.path}: "
                                  f"{REASONS[status].lower()}"}, status)
        request.match_info = params
        try:
            return await handler(request)
        except Exception as e:  # every error becomes a JSON answer, never a dropped connection
            return self.on_error(request, e)


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    try:
        method, target, version = line.decode("latin-1").split()
    except ValueError:
        raise _BadRequest("malformed request line") from None
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        raise _BadRequest("request body too large", 413)
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    req = Request(method.upper(), url.path, dict(parse_qsl(url.query)), body)
    conn = headers.get("connection", "").lower()
    req.keep_alive = conn != "close" and (version == "HTTP/1.1" or conn == "keep-alive")
    return req


def _encode(response: Response, keep_alive: bool) -> bytes:
    head = (f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode("latin-1") + response.body
