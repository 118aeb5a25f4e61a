"""The CLI's side of the agent API: plain http.client over a unix socket (fast to import)."""

from __future__ import annotations

import json
import os
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and urllib.parse cost ~5 ms of every CLI and CNI plugin call
    from typing import Any

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
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


class Client:
    def __init__(self, host: str | None = None, timeout: float = 120.0) -> None:
        self.path = socket_path(host)
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None, raw: bool = False) -> Any:
        if query:
            from urllib.parse import urlencode
            path += "?" + urlencode(query)
        payload = json.dumps(body).encode() if body is not None else None
        try:
            status, reason, data = _http(self.path, self.timeout, method, path, payload)
        except socket.timeout:
            raise ApiError(f"the overnet agent at {self.path} did not answer in time") from None
        except (FileNotFoundError, ConnectionError) as e:
            raise AgentUnreachable(
                f"cannot reach the overnet agent at {self.path} ({e.strerror}): is it running? "
                "Start it with: overnet agent --store etcd://HOST:2379 --name NAME "
                "--advertise ADDRESS") from None
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


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def ref(value: str) -> str:
    """One path segment, percent-encoded (what urllib.parse.quote(value, safe="") gives)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode())
