"""The CLI's (and the CNI plugin's) side of the agent API: HTTP/1.1 over a unix socket, kept
fast to import (see wire.py)."""

from __future__ import annotations

import os

from . import wire

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
            from urllib.parse import urlencode
            path += "?" + urlencode(query)
        payload = wire.dumps(body).encode() if body is not None else None
        return answer(*self.exchange(method, path, payload), raw=raw)

    def exchange(self, method: str, target: str, payload: bytes | None
                 ) -> tuple[int, str, bytes]:
        """One request on the socket: (status, reason, body). The agent's own plugin code,
        run inside the agent, answers it in-process instead (api/cniroute.py)."""
        try:
            return wire.exchange(self.path, self.timeout, method, target, payload)
        except TimeoutError:
            raise ApiError(f"the overnet agent at {self.path} did not answer in time") from None
        except ValueError:
            raise ApiError(f"the agent at {self.path} answered something that is not HTTP") \
                from None
        except OSError as e:
            raise AgentUnreachable(unreachable(self.path, e)) from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query={k: v for k, v in query.items() if v})

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, query or None)

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query={k: v for k, v in query.items() if v})


def answer(status: int, reason: str, data: bytes, raw: bool = False) -> Any:
    """An answer's body as JSON (or bytes); an error status as ApiError with its message."""
    if status >= 400:
        try:
            message = wire.loads(data)["message"]
        except (ValueError, KeyError, TypeError):
            message = data.decode(errors="replace") or reason
        raise ApiError(message, status)
    return data if raw else wire.loads(data)


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def ref(value: str) -> str:
    """One path segment, percent-encoded (what urllib.parse.quote(value, safe="") gives)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode())
