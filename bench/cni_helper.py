#!/usr/bin/env python3
"""The reference: containernetworking-plugins' `bridge` with `host-local` IPAM, invoked as a
container runtime invokes it (CNI_COMMAND=ADD, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_PATH, the network configuration on stdin). Runs inside a sandbox host's namespaces.

Line protocol: `add I` creates a network namespace (like a runtime, before calling the
plugin) and runs ADD, answering `result {"netns": s, "add": s}`; `quit` (or end of input)
runs DEL for every container added, removes the namespaces, the bridge and the IPAM state.
Standard library only. Usage: cni_helper.py --data-dir DIR (host-local's state).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

CNI_PATH = "/usr/lib/cni"
BRIDGE = "cnibench0"


def config(data_dir: str) -> bytes:
    return json.dumps({
        "cniVersion": "0.4.0", "name": "benchcni", "type": "bridge", "bridge": BRIDGE,
        "isGateway": True, "ipMasq": False, "mtu": 1450,
        "ipam": {"type": "host-local", "subnet": "10.250.0.0/16",
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data_dir},
    }).encode()


def plugin(command: str, cid: str, netns: str, conf: bytes) -> subprocess.CompletedProcess:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, "PATH": os.environ.get("PATH", "")}
    return subprocess.run([os.path.join(CNI_PATH, "bridge")], input=conf, env=env,
                          capture_output=True)


def main() -> int:
    if not os.access(os.path.join(CNI_PATH, "bridge"), os.X_OK):
        print("error", json.dumps(f"{CNI_PATH}/bridge is missing (Debian package "
                                  "containernetworking-plugins)"), flush=True)
        return 1
    data_dir = sys.argv[sys.argv.index("--data-dir") + 1]
    os.makedirs(data_dir, exist_ok=True)
    conf = config(data_dir)
    added: list[tuple[str, str]] = []
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] != "add" or len(words) != 2:
                print("error", json.dumps(f"unknown command {line.strip()!r}"), flush=True)
                continue
            i = words[1]
            name = f"cnibench-{i}"
            cid = f"cnibench{i:0>56}"[:64]
            t0 = time.monotonic()
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
            t1 = time.monotonic()
            added.append((cid, name))
            proc = plugin("ADD", cid, f"/run/netns/{name}", conf)
            t2 = time.monotonic()
            if proc.returncode != 0:
                print("error", json.dumps(f"bridge ADD: {proc.stdout.decode()[:300]} "
                                          f"{proc.stderr.decode()[:300]}"), flush=True)
                continue
            print("result", json.dumps({"netns": t1 - t0, "add": t2 - t1}), flush=True)
    finally:
        for cid, name in added:
            plugin("DEL", cid, f"/run/netns/{name}", conf)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
