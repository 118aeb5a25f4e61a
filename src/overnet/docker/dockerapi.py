"""Read-only questions to dockerd over its unix socket: what is Docker network X?

The plugin API never carries a network's name; libnetwork-based plugins (Calico's among them)
ask dockerd, once the network exists there. One blocking exchange in a thread (http.client
reads dockerd's chunked answers), so the plugin keeps answering dockerd meanwhile: dockerd may
be waiting on the plugin while the plugin waits on it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DOCKER_SOCKET = "/run/docker.sock"
API = "/v1.41"      # Docker 20.10


class DockerApiError(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _get(path: str, timeout: float, target: str) -> tuple[int, bytes]:
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class DockerApi:
    def __init__(self, socket_path: str = DEFAULT_DOCKER_SOCKET, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def get(self, target: str) -> Any | None:
        """The JSON of GET `target`; None for a 404; DockerApiError otherwise."""
        try:
            status, body = await asyncio.to_thread(_get, self.socket_path, self.timeout,
                                                   API + target)
        except (OSError, http.client.HTTPException) as e:
            raise DockerApiError(f"cannot ask dockerd at {self.socket_path}: {e}") from None
        if status == 404:
            return None
        if status != 200:
            raise DockerApiError(f"dockerd at {self.socket_path}: GET {target}: {status} "
                                 f"{body.decode(errors='replace')[:200]}")
        try:
            return json.loads(body)
        except ValueError:
            raise DockerApiError(f"dockerd at {self.socket_path}: GET {target}: not JSON"
                                 ) from None

    async def network(self, net_id: str) -> dict | None:
        return await self.get(f"/networks/{net_id}")

    async def container(self, container_id: str) -> dict | None:
        return await self.get(f"/containers/{container_id}/json")

    async def networks(self) -> list[dict]:
        return await self.get("/networks") or []
