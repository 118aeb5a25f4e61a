"""Fixtures for the reliability suite: labs that tests break on purpose, and agents that
die at a chosen point."""

from __future__ import annotations

import os
import time

import pytest

from overnet.api.client import ApiError, Client
from overnet.fsutil import package_root
from tests.labfixture import LabForTests, keep_logs, make_lab


def agent_argv(lab: LabForTests, host: str) -> list[str]:
    """The running agent's own command line (to start it again with something changed)."""
    with open(f"/proc/{lab.host(host).agent_pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def wait_agent(lab: LabForTests, host: str, timeout: float = 30) -> None:
    h = lab.host(host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            Client("unix://" + h.socket, timeout=2).get("/info")
            return
        except (ApiError, OSError):
            time.sleep(0.05)
    raise AssertionError(f"agent on {host} did not answer within {timeout}s")


def restart_with(lab: LabForTests, host: str, source: str | None = None, **env: str) -> None:
    """Kill `host`'s agent and start it again with the same arguments and `env` added, and
    from `source` (a directory holding another release's `overnet` package) if given: the
    agent's command line names the directory it imports overnet from (cli/main.py)."""
    argv = agent_argv(lab, host)
    if source is not None:
        ours = package_root()
        assert ours in argv, f"the agent's command line does not name {ours}: {argv}"
        argv = [source if a == ours else a for a in argv]
    h = lab.host(host)
    lab._sigkill(h.agent_pid)
    proc = lab.launch(h, "agent.log", ["env", *(f"{k}={v}" for k, v in env.items()), *argv])
    h.agent_pid = proc.pid
    wait_agent(lab, host)


def arm_crash(lab: LabForTests, host: str, point: str) -> None:
    """Restart `host`'s agent so that it dies (SIGKILL) when it reaches `point`."""
    restart_with(lab, host, OVERNET_CRASH_AT=point)


def agent_alive(lab: LabForTests, host: str) -> bool:
    pid = lab.host(host).agent_pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("rel")
    args = getattr(request.module, "AGENT_ARGS", [])
    hosts = getattr(request.module, "HOSTS", 2)
    lab = make_lab(str(root), hosts=hosts, agent_args=args)
    try:
        yield lab
    finally:
        keep_logs(lab, str(root) + "-logs")
        lab.down(quiet=True)
