"""Processes of the lab: start one inside a host, wait for it, stop it by PID.

Every long-lived process (etcd members, agents, dockerd in bench/dockerlab.py) is started
through `launch()`: inside its host's namespaces, in its own session (it outlives the
command that started it), output appended to a log file in the host's lab directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from .topology import Host, LabError, run


def alive(pid: int) -> bool:
    """True if `pid` runs (a zombie does not count)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reaps it if it is our child."""
    if not alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                return
            time.sleep(0.02)


def sigkill(pid: int) -> None:
    """SIGKILL (a crash), and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while alive(pid):
        _reap(pid)
        time.sleep(0.01)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


def launch(h: Host, log_path: str, argv: list[str]) -> subprocess.Popen:
    """Start a long-lived process inside host `h`'s namespaces, output to `log_path`, in its
    own session so it outlives this command."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(h.enter_argv() + argv, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)


# --- etcd ------------------------------------------------------------------------------------

def etcd_argv(member: Host, members: list[Host], data_dir: str, cluster: str) -> list[str]:
    """etcd for store host `member`, one of `members` (one cluster, token `cluster`). On
    the same data dir again (a restart), etcd ignores the --initial-* flags and rejoins."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return ["etcd", "--name", member.name, "--data-dir", data_dir,
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial, "--initial-cluster-token", cluster,
            "--initial-cluster-state", "new", "--enable-v2"]


def check_etcd_installed() -> None:
    if shutil.which("etcd") is None:
        raise LabError("etcd is not installed: run scripts/setup.sh (Debian package "
                       "etcd-server)")


def wait_etcd(member: Host, log_path: str, timeout: float = 30) -> None:
    """Return once `member` answers a health check (it then has a leader: a cluster member
    needs a quorum of its peers running); LabError naming it otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        probe = run(*member.enter_argv(), "etcdctl", "--endpoints", member.client_url,
                    "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health",
                    check=False)
        if probe.returncode == 0:
            return
        if not alive(member.etcd_pid) or time.monotonic() > deadline:
            raise LabError(f"etcd did not start on {member.name}: " + tail(log_path, 3))
        time.sleep(0.1)
