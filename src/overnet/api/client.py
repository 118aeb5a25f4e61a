"""The CLI's side of the agent API: plain http.client over a unix socket (fast to import)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/run/overnet/overnet.sock"


class ApiError(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AgentUnreachable(ApiError):
    pass


def socket_path(host: str | None) -> str:
    """-H unix:///path, else $OVERNET_HOST, else the default socket."""
    value = host or os.environ.get("OVERNET_HOST") or ""
    if not value:
        return DEFAULT_SOCKET
    if value.startswith("unix://"):
        return value[len("unix://"):]
    if value.startswith("/"):
        return value
    raise ApiError(f"invalid agent address {value!r}: expected unix:///path/to/overnet.sock")


def _http(path: str, timeout: float, method: str, target: str, payload: bytes | None
          ) -> tuple[int, str, bytes]:
    """One HTTP/1.1 exchange over a unix socket. Hand-rolled: http.client's import alone costs
    a CLI call ~30 ms, and every `overnet …` command is one such exchange."""
    head = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close",
            f"Content-Length: {len(payload or b'')}"]
    if payload:
        head.append("Content-Type: application/json")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + (payload or b""))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    header, _, body = raw.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    try:
        _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        code = int(status)
    except ValueError:
        raise ApiError(f"the agent at {path} answered something that is not HTTP") from None
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return code, reason, body


def _unchunk(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def unreachable(path: str, e: OSError) -> str:
    """One line saying why the agent's socket cannot be used, and what to do."""
    where = f"cannot reach the agent at unix://{path}"
    start = ("is the agent running? Start it with: overnet agent --store etcd://HOST:2379 "
             "--name NAME --advertise ADDRESS")
    if isinstance(e, PermissionError):
        return f"{where}: permission denied (run as root)"
    if isinstance(e, FileNotFoundError):
        return f"{where}: no such socket ({start})"
    if isinstance(e, ConnectionRefusedError):
        return f"{where}: connection refused ({start})"
    return f"{where}: {e.strerror or e}"


class Client:
    def __init__(self, host: str | None = None, timeout: float = 120.0) -> None:
        self.path = socket_path(host)
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None, raw: bool = False) -> Any:
        if query:
            path += "?" + urlencode(query)
        payload = json.dumps(body).encode() if body is not None else None
        try:
            status, reason, data = _http(self.path, self.timeout, method, path, payload)
        except TimeoutError:
            raise ApiError(f"the overnet agent at {self.path} did not answer in time") from None
        except OSError as e:
            raise AgentUnreachable(unreachable(self.path, e)) from None
        if status >= 400:
            try:
                message = json.loads(data)["message"]
            except (ValueError, KeyError, TypeError):
                message = data.decode(errors="replace") or reason
            raise ApiError(message, status)
        return data if raw else json.loads(data)

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query={k: v for k, v in query.items() if v})

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, query or None)

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query={k: v for k, v in query.items() if v})


def ref(value: str) -> str:
    return quote(value, safe="")
