"""A sandbox with a three-member etcd loses one member: the hosts do not notice.

`sandbox up --store-members 3` (through the Lab API), containers on two hosts pinging each
other, then the etcd member net-1's agent is talking to is killed (SIGKILL) and stays down.
Commands on both hosts must keep working (after a grace of a few seconds at most, printed,
not asserted), traffic between the containers must not stop, and `down` leaves nothing.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time

import pytest

from overnet.sandbox.lab import Lab
from tests.e2e.test_sandbox import lab_pids, leftovers
from tests.labfixture import LabForTests, free_underlay, keep_logs


@pytest.fixture
def lab3(tmp_path):
    lab = LabForTests(f"f{secrets.token_hex(2)}", root=str(tmp_path), say=lambda m: None)
    pids: list[int] = []
    try:
        lab.up(hosts=2, underlay=free_underlay(), store_members=3)
        pids += lab_pids(lab)
        yield lab
    finally:
        if lab.state is not None:
            pids += lab_pids(lab)
            keep_logs(lab, str(tmp_path) + "-logs")
        lab.down(quiet=True)
    assert leftovers(lab, pids) == []


def ip_of(lab: LabForTests, host: str, container: str) -> str:
    return lab.out(host, "inspect", "-f", "{{ .NetworkSettings.IPAddress }}", container)


def first_success(lab: LabForTests, host: str, *args: str, patience: float = 15.0) -> float:
    """Seconds until `overnet ARGS` on `host` first succeeds (AssertionError after
    `patience`)."""
    began = time.monotonic()
    while True:
        proc = lab.ov(host, *args, check=False)
        if proc.returncode == 0:
            return time.monotonic() - began
        if time.monotonic() - began > patience:
            raise AssertionError(f"overnet {' '.join(args)} on {host} still fails after "
                                 f"{patience}s: {proc.stderr.strip()}")
        time.sleep(0.2)


def test_store_member_killed_commands_and_traffic_go_on(lab3: LabForTests) -> None:
    assert [r["name"] for r in lab3.status() if r["role"] == "etcd"] == \
        ["store-1", "store-2", "store-3"]
    lab3.ov("net-1", "network", "create", "-d", "overlay", "ha")
    a = lab3.out("net-1", "run", "-d", "--net", "ha", "--name", "ca", "sleep", "infinity")
    b = lab3.out("net-2", "run", "-d", "--net", "ha", "--name", "cb", "sleep", "infinity")
    ip_b = ip_of(lab3, "net-2", b)
    assert lab3.ping("net-1", a, ip_b)
    pinger = subprocess.Popen(
        lab3.ssh_argv("net-1", ["overnet", "exec", a, "ping", "-c", "40", "-i", "0.1",
                                "-W", "1", ip_b])[0],
        env=lab3.ssh_argv("net-1", [])[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        victim = lab3.store_member_used_by("net-1")
        assert victim is not None, "net-1's agent holds no connection to any etcd member"
        time.sleep(1)
        lab3.kill_store_member(victim)
        grace = first_success(lab3, "net-1", "network", "create", "-d", "overlay", "ha2")
        out, err = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
    assert " 0% packet loss" in out, out + err
    alive = {r["name"]: r["alive"] for r in lab3.status()}
    assert alive[victim] is False and sum(alive.values()) == 4  # the member stays down
    c = lab3.out("net-1", "run", "-d", "--net", "ha2", "--name", "cc", "sleep", "infinity")
    d = lab3.out("net-2", "run", "-d", "--net", "ha2", "--name", "cd", "sleep", "infinity")
    e = lab3.out("net-2", "run", "-d", "--net", "ha", "--name", "ce", "sleep", "infinity")
    for host, wanted in (("net-1", {a, c}), ("net-2", {b, d, e})):
        listed = set(lab3.out(host, "ps", "-q").split())
        assert {cid[:12] for cid in wanted} <= listed, (host, wanted, listed)
    assert lab3.ping("net-1", c, ip_of(lab3, "net-2", d))
    assert lab3.ping("net-2", e, ip_of(lab3, "net-1", a))
    assert lab3.ping("net-1", a, ip_b)
    print(f"\nkilled {victim}; first command after the kill succeeded after {grace:.2f}s")
    lab3.start_store_member(victim)  # it rejoins the cluster on its own data
    assert all(r["alive"] for r in lab3.status())
    health = lab3.run(victim, ["etcdctl", "--endpoints", lab3.state.store_url[7:],
                               "endpoint", "health"])
    assert health.returncode == 0 and health.stderr.count("is healthy") == 3, health.stderr


def test_cli_refuses_a_bad_member_count(tmp_path) -> None:
    name = f"g{secrets.token_hex(2)}"
    proc = subprocess.run([sys.executable, "-m", "overnet", "sandbox", "up", "--name", name,
                           "--store-members", "2", "--underlay", free_underlay()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and "invalid --store-members 2" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(Lab(name), []) == []
