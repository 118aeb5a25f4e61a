"""Read-only questions to dockerd over its unix socket: what is Docker network X?

The plugin API never carries a network's name; libnetwork-based plugins (Calico's among them)
ask dockerd, once the network exists there. One blocking HTTP exchange in a thread, so the
plugin keeps answering dockerd meanwhile (dockerd waits on the plugin while we wait on it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..api.client import _http  # one hand-rolled HTTP/1.1 exchange over a unix socket

log = logging.getLogger(__name__)

DEFAULT_DOCKER_SOCKET = "/run/docker.sock"
API = "/v1.41"      # Docker 20.10


class DockerApiError(Exception):
    pass


class DockerApi:
    def __init__(self, socket_path: str = DEFAULT_DOCKER_SOCKET, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def get(self, target: str) -> Any | None:
        """The JSON of GET `target`; None for a 404; DockerApiError otherwise."""
        try:
            status, reason, body = await asyncio.to_thread(
                _http, self.socket_path, self.timeout, "GET", API + target, None)
        except (OSError, ValueError) as e:
            raise DockerApiError(f"cannot ask dockerd at {self.socket_path}: {e}") from None
        if status == 404:
            return None
        if status != 200:
            raise DockerApiError(f"dockerd at {self.socket_path}: GET {target}: {status} "
                                 f"{body.decode(errors='replace')[:200] or reason}")
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
