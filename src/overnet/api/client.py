"""The CLI's side of the agent API: plain http.client over a unix socket (fast to import)."""

from __future__ import annotations

import http.client
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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Client:
    def __init__(self, host: str | None = None, timeout: float = 120.0) -> None:
        self.path = socket_path(host)
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None, raw: bool = False) -> Any:
        if query:
            path += "?" + urlencode(query)
        conn = _UnixConnection(self.path, self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except socket.timeout:
            raise ApiError(f"the overnet agent at {self.path} did not answer in time") from None
        except (FileNotFoundError, ConnectionError) as e:
            raise AgentUnreachable(
                f"cannot reach the overnet agent at {self.path} ({e.strerror}): is it running? "
                "Start it with: overnet agent --store etcd://HOST:2379 --name NAME "
                "--advertise ADDRESS") from None
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                message = json.loads(data)["message"]
            except (ValueError, KeyError, TypeError):
                message = data.decode(errors="replace") or resp.reason
            raise ApiError(message, resp.status)
        return data if raw else json.loads(data)

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query={k: v for k, v in query.items() if v})

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, query or None)

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query={k: v for k, v in query.items() if v})


def ref(value: str) -> str:
    return quote(value, safe="")
