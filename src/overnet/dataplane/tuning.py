"""Data-plane tuning that measured better (bench/tuning.py shows each lever's effect).

Bridge netfilter: wherever the `br_netfilter` module is loaded (Docker, kube-proxy and many
distributions load it), every frame crossing a Linux bridge is also handed to the iptables
hooks of that bridge's network namespace, because `net.bridge.bridge-nf-call-iptables` (and
-ip6tables, -arptables) default to 1 in each namespace. An overlay network's namespace holds
only br0 and vxlan0 and no firewall rules, so that is pure cost on every packet; turning it off
there changes nothing else. The sysctls are per network namespace (Linux >= 5.3) and appear in
existing namespaces when the module is loaded later, so callers re-apply this on resync.
"""

from __future__ import annotations

import os
import threading

from . import syscalls as sc

BRIDGE_NF = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables")
SYSCTL_DIR = "/proc/sys/net/bridge"


def _write_off(changed: list[str]) -> None:
    """In the current thread's network namespace: set each bridge-nf sysctl to 0."""
    for name in BRIDGE_NF:
        path = os.path.join(SYSCTL_DIR, name)
        try:
            with open(path) as f:
                if f.read().strip() == "0":
                    continue
            with open(path, "w") as f:
                f.write("0")
            changed.append(name)
        except FileNotFoundError:     # br_netfilter not loaded: nothing hooks the bridge
            continue


def bridge_netfilter_off(ns_path: str) -> list[str]:
    """Turn bridge netfilter off in the network namespace at `ns_path`; returns the sysctls
    that were on (empty: already off, or br_netfilter not loaded). Runs in a short-lived
    thread that enters the namespace (/proc/sys/net follows the calling thread's namespace),
    so the caller's thread never changes namespace. Raises OSError if `ns_path` cannot be
    entered or a sysctl cannot be written."""
    changed: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                sc.setns(fd, sc.CLONE_NEWNET)
            finally:
                os.close(fd)
            _write_off(changed)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    t = threading.Thread(target=work, name="bridge-nf-off", daemon=True)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return changed
