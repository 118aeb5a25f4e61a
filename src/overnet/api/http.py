"""A small HTTP/1.1 server on asyncio streams, for the agent's unix-socket API.

The API is a handful of JSON routes with one client at a time per connection; a web framework
would cost the agent ~25 MB of resident memory and a slower start. Names follow aiohttp's
(`RouteTableDef`, `Request`, `Response`) so route code reads the same.

Whatever arrives, the server answers with a JSON `{"message": ...}` or closes cleanly: sizes
are bounded (request line and header lines, header count, body), a malformed request gets a
4xx and the connection is closed (its framing can no longer be trusted), and an error raised by
a route goes through `on_error`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, unquote

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20        # the biggest body a route takes is a few kB of JSON
MAX_LINE = 8 << 10        # the request line, and each header line
MAX_HEADERS = 64
MAX_HEAD = 32 << 10       # all header lines together
MAX_DISCARD = 64 << 20    # a refused body up to this size is read (and dropped) before closing
REASONS = {100: "Continue", 200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
           413: "Payload Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}
_REQUEST_LINE = re.compile(r"([A-Za-z]{1,16}) (/\S*) (HTTP/1\.[01])\r?\n", re.ASCII)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)   # RFC 9110 token


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes = b""
    match_info: dict[str, str] = field(default_factory=dict)
    keep_alive: bool = True

    async def json(self) -> Any:
        """The body as JSON; ValueError if it is not (also when nested too deep to parse)."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("request body is nested too deeply") from None


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    # A body sent as it is made (e.g. newline-delimited JSON); the connection closes after it.
    stream: AsyncIterator[bytes] | None = None

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
        # `limit` bounds every line read: a longer one raises instead of filling memory.
        self._server = await asyncio.start_unix_server(self._connection, path, limit=MAX_LINE)

    async def start_tcp(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass   # the client went away mid-request: nobody to answer
        except Exception:   # a bug here must cost one connection, never the server
            log.exception("API connection failed")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await _read_request(reader, writer)
            except _BadRequest as e:
                writer.write(_encode(Response.json({"message": str(e)}, e.status), False))
                await writer.drain()
                await _discard(reader, e.unread)
                return
            if request is None:
                return
            response, keep_alive = await self._dispatch(request), request.keep_alive
            if response.stream is not None:
                return await _send_stream(writer, response)
            writer.write(_encode(response, keep_alive))
            if not keep_alive:
                # the end of the answer now: closing waits for the loop's next turn, which
                # may come after other work (e.g. the reconcile this request asked for)
                writer.write_eof()
            await writer.drain()
            if not keep_alive:
                return

    async def _dispatch(self, request: Request) -> Response:
        return await dispatch(self.routes, self.on_error, request)


async def dispatch(routes: RouteTableDef, on_error: Callable[[Request, Exception], Response],
                   request: Request) -> Response:
    """A request's answer from its route; the agent also calls its own routes this way,
    in-process (api/cniroute.py)."""
    handler, params, exists = routes.find(request.method, request.path)
    if handler is None:
        status = 405 if exists else 404
        return Response.json({"message": f"{request.method} {request.path[:200]}: "
                              f"{REASONS[status].lower()}"}, status)
    request.match_info = params
    try:
        return await handler(request)
    except Exception as e:  # noqa: BLE001 - every error becomes a JSON answer
        try:
            return on_error(request, e)
        except Exception:
            log.exception("%s %s: error handler failed", request.method, request.path)
            return Response.json({"message": "internal error"}, 500)


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, unread: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.unread = unread   # body bytes the client is still sending


async def _discard(reader: asyncio.StreamReader, size: int) -> None:
    """Read and drop a refused body before closing: closing a unix socket with data unread
    resets the client, which may then never read the answer it was sent."""
    if size > MAX_DISCARD:
        return
    while size > 0:
        chunk = await reader.read(min(size, 1 << 16))
        if not chunk:
            return
        size -= len(chunk)


async def _line(reader: asyncio.StreamReader, what: str, status: int) -> bytes:
    """One line ending in LF; b"" at a clean end of stream. IncompleteReadError when the
    stream ends inside the line."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return b""
        raise
    except asyncio.LimitOverrunError:
        raise _BadRequest(f"{what} longer than {MAX_LINE} bytes", status) from None


async def _read_request(reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> Request | None:
    line = await _line(reader, "request line", 414)
    if not line:
        return None
    match = _REQUEST_LINE.fullmatch(line.decode("latin-1"))
    if match is None:
        raise _BadRequest(f"malformed request line {_show(line)}: expected METHOD /PATH "
                          "HTTP/1.1")
    method, target, version = match.groups()
    headers = await _read_headers(reader)
    length = _content_length(headers)
    if length and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await reader.readexactly(length) if length else b""
    # Not urlsplit: it reads "//host/path" as a network location, a route must not move.
    path, _, query_text = target.partition("#")[0].partition("?")
    try:
        query = dict(parse_qsl(query_text, max_num_fields=64))
    except ValueError as e:
        raise _BadRequest(f"malformed query {_show(query_text)}: {e}") from None
    req = Request(method.upper(), path, query, body)
    conn = headers.get("connection", "").lower()
    req.keep_alive = conn != "close" and (version == "HTTP/1.1" or conn == "keep-alive")
    return req


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    count = size = 0
    while (raw := await _line(reader, "header line", 431)) not in (b"\r\n", b"\n"):
        if not raw:
            raise asyncio.IncompleteReadError(b"", None)   # ended before the blank line
        count, size = count + 1, size + len(raw)
        if count > MAX_HEADERS or size > MAX_HEAD:
            raise _BadRequest(f"request headers over the limit of {MAX_HEADERS} lines or "
                              f"{MAX_HEAD} bytes", 431)
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not _HEADER_NAME.fullmatch(name):
            raise _BadRequest(f"malformed header line {_show(raw)}")
        name, value = name.lower(), value.strip()
        if name in headers and name in ("content-length", "transfer-encoding"):
            raise _BadRequest(f"more than one {name} header")
        headers[name] = value
    return headers


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise _BadRequest("Transfer-Encoding is not supported: send a Content-Length", 411)
    raw = headers.get("content-length", "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise _BadRequest(f"invalid Content-Length {_show(raw)}: expected a number of bytes")
    length = int(raw)
    if length > MAX_BODY:
        raise _BadRequest(f"request body of {length} bytes is over the limit of {MAX_BODY} "
                          "bytes", 413, unread=length)
    return length


def _show(value: bytes | str) -> str:
    """Part of a bad request for an error message: printable, short."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.rstrip("\r\n")
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


async def _send_stream(writer: asyncio.StreamWriter, response: Response) -> None:
    """A body of unknown length: its end is the end of the connection (HTTP/1.1 allows it)."""
    assert response.stream is not None
    writer.write((f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"
                  f"Content-Type: {response.content_type}\r\nConnection: close\r\n\r\n")
                 .encode("latin-1"))
    try:
        async for chunk in response.stream:
            writer.write(chunk)
            await writer.drain()
    finally:
        aclose = getattr(response.stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _encode(response: Response, keep_alive: bool) -> bytes:
    head = (f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode("latin-1") + response.body
