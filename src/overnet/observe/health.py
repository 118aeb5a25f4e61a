"""Liveness and readiness, as flanneld's /healthz (and Kubernetes' /readyz) mean them:
alive is "the process answers"; ready is "the store answers, this agent's copy of it is in
sync, and its data plane holds what the store says"."""

from __future__ import annotations

import asyncio
from typing import Any

from ..store import keys
from ..store.base import StoreError

STORE_PATIENCE = 2.0


async def readiness(agent: Any) -> dict[str, Any]:
    """{"ready": bool, "checks": {name: "" if fine else why not}}."""
    checks = {"store": await store_problem(agent), "sync": sync_problem(agent),
              "dataplane": dataplane_problem(agent)}
    return {"ready": not any(checks.values()), "checks": checks}


async def store_problem(agent: Any) -> str:
    if agent.store is None:
        return "not connected yet"
    try:
        await asyncio.wait_for(agent.store.get(keys.alive(agent.name)), STORE_PATIENCE)
    except (TimeoutError, StoreError, OSError) as e:
        return f"store {agent.cfg.store} does not answer: {e or 'timeout'}"
    return ""


def sync_problem(agent: Any) -> str:
    state = getattr(agent.mirror, "state", "waiting") if agent.mirror else "waiting"
    return "" if state == "in-sync" else f"store watch is {state}"


def dataplane_problem(agent: Any) -> str:
    if getattr(agent, "reconciler", None) is None:
        return "the agent is still starting"
    failed = sorted(agent.observer.failed_targets & agent._active_networks())
    if failed:
        names = [_name(agent, t) for t in failed]
        return f"reconciling {', '.join(names)} failed: see the agent's log"
    return ""


def _name(agent: Any, target: str) -> str:
    net = agent.networks.get(target.partition(":")[2])
    return f"network {net.name}" if net else target
