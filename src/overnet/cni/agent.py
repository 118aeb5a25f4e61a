"""The plugin's side of the agent: the API client, and agent errors as CNI errors."""

from __future__ import annotations

from ..api.client import AgentUnreachable, ApiError, Client, ref
from .spec import INTERNAL, INVALID_CONFIG, TRY_AGAIN_LATER, CniError

__all__ = [
    "AgentUnreachable",
    "ApiError",
    "Client",
    "connect",
    "endpoint_path",
    "ref",
    "to_cni_error",
    "transient",
]

# An ADD can wait for the agent to create a network's devices on this host the first time.
TIMEOUT = 60.0


def connect(socket: str, timeout: float = TIMEOUT) -> Client:
    return Client(socket, timeout=timeout)


def endpoint_path(container_id: str, ifname: str, suffix: str = "") -> str:
    return f"/endpoints/{ref(container_id)}/{ref(ifname)}{suffix}"


def transient(e: ApiError) -> bool:
    """The agent is not there, did not answer, or cannot reach its store: worth a retry."""
    return isinstance(e, AgentUnreachable) or e.status in (0, 503)


def to_cni_error(e: ApiError, what: str, not_found: int = INVALID_CONFIG) -> CniError:
    """`what` says what the plugin was doing; a 404 means an unknown network on ADD (invalid
    config) and an unknown container on CHECK (`not_found`)."""
    if transient(e):
        return CniError(TRY_AGAIN_LATER, f"{what}: the overnet agent is not available",
                        e.message)
    if e.status == 404:
        return CniError(not_found, f"{what}: {e.message}")
    if e.status == 400:
        return CniError(INVALID_CONFIG, f"{what}: {e.message}")
    return CniError(INTERNAL, f"{what}: {e.message}", f"the agent answered HTTP {e.status}")
