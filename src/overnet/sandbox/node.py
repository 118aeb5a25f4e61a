"""One host of the lab: a network namespace on the underlay, plus a holder process.

The holder owns the host's mount and UTS namespaces: its own tmpfs on /run (so /run/overnet
and /run/flannel are the host's own, as on a real machine) and its own hostname. Agents,
`ssh` shells and commands enter all three namespaces through it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from .procs import alive, kill
from .topology import Host, LabError, run

# The holder: a private /run and a hostname, then nothing but being there.
_HOLDER = ("mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/overnet /run/flannel "
           "/run/netns && hostname \"$0\" && exec sleep infinity")


def make_host(h: Host, bridge: str, prefixlen: int, host_dir: str) -> None:
    """Make host `h` (its netns, its veth on the underlay `bridge` with `h.address`) and
    start its holder; return once its /run is ready, LabError if it cannot be set up. `h`
    is filled in as things are made (holder_pid), so the caller's record of it names
    everything to clean up even after a failure."""
    run("ip", "netns", "add", h.netns)
    run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
    run("ip", "link", "set", h.veth, "master", bridge, "up")
    ns = ("ip", "-n", h.netns)
    run(*ns, "addr", "add", f"{h.address}/{prefixlen}", "dev", "eth0")
    run(*ns, "link", "set", "eth0", "up")
    run(*ns, "link", "set", "lo", "up")
    os.makedirs(host_dir, exist_ok=True)
    holder = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", "--mount", "--uts",
         "--propagation", "private", "sh", "-c", _HOLDER, h.name],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    h.holder_pid = holder.pid
    deadline = time.monotonic() + 5
    while not os.path.isdir(h.run_dir + "/overnet"):
        if holder.poll() is not None:
            assert holder.stderr is not None
            raise LabError(f"host {h.name}: could not set up its namespaces: "
                           f"{holder.stderr.read().decode().strip()}")
        if time.monotonic() > deadline:
            raise LabError(f"host {h.name}: namespaces not ready after 5s")
        time.sleep(0.01)


def remove_host(h: Host) -> None:
    """The holder, the veth and the namespace of `h` (what is already gone is skipped)."""
    kill(h.holder_pid)
    run("ip", "link", "del", h.veth, check=False)
    run("ip", "netns", "del", h.netns, check=False)


def shell_env(h: Host) -> dict[str, str]:
    """The environment of a shell on `h`: this Python's overnet first on PATH, a prompt
    naming the host, and no OVERNET_HOST (the host's own socket is the default)."""
    env = dict(os.environ)
    env.pop("OVERNET_HOST", None)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + ":" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["PS1"] = f"root@{h.name}:\\w# "
    env["OVERNET_SANDBOX_HOST"] = h.name
    return env


def ssh_argv(h: Host, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `cmd` on `h` (an interactive shell if `cmd` is empty)."""
    if not alive(h.holder_pid):
        raise LabError(f"host {h.name} is down: run `overnet sandbox down` then `up`")
    shell = shutil.which("bash") or "/bin/sh"
    if not cmd:
        cmd = [shell, "--norc", "-i"] if shell.endswith("bash") else [shell, "-i"]
    return h.enter_argv() + cmd, shell_env(h)
