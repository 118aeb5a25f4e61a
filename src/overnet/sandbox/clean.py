"""Taking a lab down: every process it started, every namespace, device and file it made.

The order matters: agents first (so they stop reconciling), then the containers they leave
running, then anything else still inside a host's network namespace (shells, tools), then
the etcd members, the holders, the veths, the namespaces, the bridge and the directory.
"""

from __future__ import annotations

import json
import os
import shutil

from ..runtime.process import alive as container_alive
from .node import remove_host
from .procs import kill, sigkill
from .topology import Host, LabState, run


def take_down(state: LabState, lab_dir: str) -> None:
    for h in state.hosts:
        kill(h.agent_pid)
        for pid in recorded_container_pids(h):
            sigkill(pid)
    kill_inside(state)
    for h in state.stores:
        kill(h.etcd_pid)
    for h in state.all_hosts():
        remove_host(h)
    run("ip", "link", "del", state.bridge, check=False)
    shutil.rmtree(lab_dir, ignore_errors=True)


def recorded_container_pids(h: Host) -> list[int]:
    """Containers whose agent is gone: their pids are in the host's state directory."""
    pids = []
    cdir = h.run_dir + "/overnet/containers"
    for cid in os.listdir(cdir) if os.path.isdir(cdir) else []:
        try:
            with open(os.path.join(cdir, cid, "config.json")) as f:
                c = json.load(f)
        except (OSError, ValueError):
            continue
        if c.get("status") == "running" and container_alive(c.get("pid", 0),
                                                            c.get("start_time")):
            pids.append(c["pid"])
    return pids


def kill_inside(state: LabState) -> None:
    """Anything still running in a host's network namespace but its holder: shells,
    containers of an agent that died, tools left by a user (etcd members are stopped
    apart, with SIGTERM first)."""
    inodes = set()
    for h in state.all_hosts():
        try:
            inodes.add(os.stat(f"/run/netns/{h.netns}").st_ino)
        except OSError:
            pass
    spare = {h.holder_pid for h in state.all_hosts()} | {h.etcd_pid for h in state.stores}
    spare.add(os.getpid())
    for pid_s in os.listdir("/proc"):
        if not pid_s.isdigit() or int(pid_s) in spare:
            continue
        try:
            ino = os.stat(f"/proc/{pid_s}/ns/net").st_ino
        except OSError:
            continue
        if ino in inodes:
            sigkill(int(pid_s))
