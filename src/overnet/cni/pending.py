"""DELs the agent could not take yet, kept as small files until an invocation (or the agent
at start) reaches the agent and finishes them. DEL must succeed for the runtime even when the
agent is down, but the endpoint's address and records must still be released later."""

from __future__ import annotations

import os
import sys
import time

from ..api import wire
from .agent import ApiError, endpoint_path, transient


def entry_name(container_id: str, ifname: str) -> str:
    # an interface name may hold characters a file name should not: hex keeps it plain
    return f"{container_id}.{ifname.encode().hex()}.json"


def remember(directory: str, container_id: str, ifname: str, network: str) -> str:
    """Record a DEL to finish later; written whole or not at all (rename)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, entry_name(container_id, ifname))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(wire.dumps({"container_id": container_id, "ifname": ifname,
                            "network": network, "since": time.time()}))
    os.replace(tmp, path)
    return path


def forget(directory: str, container_id: str, ifname: str) -> None:
    try:
        os.unlink(os.path.join(directory, entry_name(container_id, ifname)))
    except FileNotFoundError:
        pass


def entries(directory: str) -> list[tuple[str, dict]]:
    """(path, record) of every pending DEL, oldest first; unreadable files are skipped."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                record = wire.loads(f.read())
            found.append((path, {"container_id": str(record["container_id"]),
                                 "ifname": str(record["ifname"]),
                                 "since": float(record.get("since", 0))}))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda item: item[1]["since"])


def flush_pending(client, directory: str) -> int:
    """Send every pending DEL to the agent through `client` (anything with the
    `overnet.api.client.Client.delete(path)` method). Stops at the first sign the agent is
    still unavailable. Returns how many were finished."""
    done = 0
    for path, record in entries(directory):
        try:
            client.delete(endpoint_path(record["container_id"], record["ifname"]))
        except ApiError as e:
            if transient(e):
                break
            if e.status >= 500:
                continue  # the agent failed on it: keep it for another try
            if e.status != 404:  # 404: already gone, which is what the DEL wanted
                # any other 4xx: retrying cannot help, so drop it, but say so
                print(f"overnet-cni: dropping pending DEL {record}: {e.message}",
                      file=sys.stderr)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass  # another invocation finished it at the same time
        done += 1
    return done


async def flush_pending_with(detach, directory: str) -> int:
    """The same from inside the agent (which must not call its own API from its event loop):
    `detach(container_id, ifname)` is its own awaitable detach. An exception from it stops
    the flush and leaves that DEL and the rest pending."""
    done = 0
    for path, record in entries(directory):
        await detach(record["container_id"], record["ifname"])
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        done += 1
    return done
