"""What a container is made of: its spec, and the files its /etc is given.

A container is a host process in its own network, UTS, mount and PID namespaces. It shares the
host's filesystem, except that its /etc/hosts, /etc/hostname and /etc/resolv.conf are
bind-mounted from files in the container's state directory, its /proc shows only its own
processes, and the directories listed in `hide` (the agent's socket and state) are covered by an
empty file system. A `privileged` container gets none of the confinement: only its own network,
UTS and mount namespaces and the files above.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from ..fsutil import write_atomic

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where systemd-resolved keeps the real upstream servers when /etc/resolv.conf only lists its
# 127.0.0.53 stub (the same fallback Docker uses).
SYSTEMD_RESOLV = "/run/systemd/resolve/resolv.conf"


@dataclass
class ContainerSpec:
    id: str                      # 64 hex characters
    hostname: str
    netns: str                   # pinned network namespace file
    netns_dir: str | None        # directory of pinned namespaces, detached inside the container
    hosts_file: str
    hostname_file: str
    resolv_file: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    privileged: bool = False     # no PID namespace, all capabilities, nothing hidden
    hide: list[str] = field(default_factory=list)  # directories covered by an empty tmpfs


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def filter_resolv_conf(text: str) -> tuple[str, bool]:
    """Drop loopback nameservers (unreachable from the container's network namespace).

    Returns the new text and whether a nameserver line remains.
    """
    out: list[str] = []
    has_server = False
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            if _is_loopback(words[1]):
                continue
            has_server = True
        out.append(line)
    return "".join(f"{line}\n" for line in out), has_server


def prepare_files(spec: ContainerSpec, hosts_content: str,
                  resolv_source: str = "/etc/resolv.conf") -> None:
    """Write the container's hostname, resolv.conf and hosts files into its state directory."""
    write_atomic(spec.hostname_file, f"{spec.hostname}\n", 0o644)
    try:
        with open(resolv_source) as f:
            resolv, has_server = filter_resolv_conf(f.read())
    except FileNotFoundError:  # no DNS configured on the host: none in the container either
        resolv, has_server = "", False
    if not has_server and resolv_source == "/etc/resolv.conf" and os.path.exists(SYSTEMD_RESOLV):
        with open(SYSTEMD_RESOLV) as f:
            resolv, _ = filter_resolv_conf(f.read())
    write_atomic(spec.resolv_file, resolv, 0o644)
    write_atomic(spec.hosts_file, hosts_content, 0o644)


def container_env(spec: ContainerSpec, term: str | None = None) -> dict[str, str]:
    """The environment of a container's process: sane defaults overridden by spec.env."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": spec.hostname}
    if term:
        env["TERM"] = term
    env.update(spec.env)
    return env
