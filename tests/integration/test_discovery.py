"""Services and /etc/hosts discovery across hosts; isolation between networks."""

from __future__ import annotations

import re
import time

import pytest

from tests.labfixture import make_lab, wait_until


def hosts_names(lab, host: str, container: str) -> set[str]:
    text = lab.out(host, "exec", container, "cat", "/etc/hosts")
    return {line.split()[1] for line in text.splitlines() if len(line.split()) > 1}


def test_publish_service_creates_network_and_is_unique(lab2):
    c = lab2.out("net-1", "run", "-d", "--publish-service=bar.svcnet.overlay", "sleep",
                 "infinity")
    try:
        assert "svcnet" in lab2.out("net-2", "network", "ls")
        svc = lab2.out("net-2", "service", "ls")
        assert re.search(r"\bbar\s+svcnet\s+" + c[:12], svc), svc
        proc = lab2.ov("net-2", "run", "-d", "--publish-service=bar.svcnet", "true",
                       check=False)
        assert proc.returncode == 1 and "bar" in proc.stderr and "svcnet" in proc.stderr
        d = lab2.out("net-2", "run", "-d", "--net", "svcnet", "sleep", "infinity")
        assert "bar" in hosts_names(lab2, "net-2", d)
        assert lab2.ping("net-2", d, "bar")
        lab2.ov("net-2", "rm", "-f", d)
    finally:
        lab2.ov("net-1", "rm", "-f", c)
    assert wait_until(lambda: "bar" not in lab2.out("net-2", "service", "ls"))
    lab2.ov("net-1", "network", "rm", "svcnet")


def test_isolation_even_with_the_same_subnet(lab2):
    """Two networks with one subnet: each container knows the other's address, and even an
    address it shares with its own network's peers does not reach across VNIs."""
    lab2.ov("net-1", "network", "create", "--subnet", "10.50.0.0/24", "red")
    lab2.ov("net-1", "network", "create", "--subnet", "10.50.0.0/24", "blue")
    made = []
    try:
        r1 = lab2.out("net-1", "run", "-d", "--net", "red", "--name", "r1", "sleep", "infinity")
        made.append(("net-1", r1))
        r2 = lab2.out("net-2", "run", "-d", "--net", "red", "--name", "r2", "sleep", "infinity")
        made.append(("net-2", r2))
        for name in ("b1", "b2"):
            made.append(("net-2", lab2.out("net-2", "run", "-d", "--net", "blue", "--name", name,
                                           "sleep", "infinity")))
        b2 = made[-1][1]
        red_ips = {lab2.inspect(h, c)["NetworkSettings"]["IPAddress"] for h, c in made[:2]}
        ip_b2 = lab2.inspect("net-2", b2)["NetworkSettings"]["IPAddress"]
        assert ip_b2 not in red_ips       # an address of blue that red does not use itself
        ip_r2 = lab2.inspect("net-2", r2)["NetworkSettings"]["IPAddress"]
        assert lab2.ping("net-1", r1, ip_r2)
        assert not lab2.ping("net-1", r1, ip_b2, count=2)
        assert "b2" not in hosts_names(lab2, "net-1", r1)
        assert "r1" not in hosts_names(lab2, "net-2", b2)
    finally:
        for host, c in made:
            lab2.ov(host, "rm", "-f", c)
        lab2.ov("net-1", "network", "rm", "red", "blue")


@pytest.fixture(scope="module")
def lab3(tmp_path_factory):
    lab = make_lab(str(tmp_path_factory.mktemp("lab3")), hosts=3)
    try:
        yield lab
    finally:
        lab.down(quiet=True)


def test_hosts_files_follow_joins_and_leaves_within_a_second(lab3):
    hosts = ("net-1", "net-2", "net-3")
    cs = {h: lab3.out(h, "run", "-d", "--name", f"c-{h}", "sleep", "infinity") for h in hosts}
    names = {f"c-{h}" for h in hosts}
    for h in hosts:
        assert wait_until(lambda: names <= hosts_names(lab3, h, cs[h]), timeout=2)
        text = lab3.out(h, "exec", cs[h], "cat", "/etc/hosts")
        assert "c-net-1.multihost" in text
    # read the files the containers see, through their mount namespaces
    files = {h: f"/proc/{lab3.inspect(h, cs[h])['State']['Pid']}/root/etc/hosts"
             for h in ("net-1", "net-2")}
    t0 = time.monotonic()
    lab3.ov("net-3", "rm", "-f", cs["net-3"])
    gone_at: dict[str, float] = {}
    while len(gone_at) < 2 and time.monotonic() - t0 < 3:
        for h, path in files.items():
            if h not in gone_at and "c-net-3" not in open(path).read():
                gone_at[h] = time.monotonic() - t0
        time.sleep(0.005)
    print(f"[discovery] hosts files dropped the leaver after {gone_at} s (from `rm -f` issued)")
    assert len(gone_at) == 2 and max(gone_at.values()) < 1.0, gone_at
    for h in ("net-1", "net-2"):
        lab3.ov(h, "rm", "-f", cs[h])


def test_records_of_a_dead_host_are_collected_after_the_grace(tmp_path):
    lab = make_lab(str(tmp_path), agent_args=["--gc-grace", "2"])
    try:
        a = lab.out("net-1", "run", "-d", "--name", "stays", "sleep", "infinity")
        lab.out("net-2", "run", "-d", "--name", "orphan", "sleep", "infinity")
        assert wait_until(lambda: "orphan" in hosts_names(lab, "net-1", a))
        lab._sigkill(lab.host("net-2").agent_pid)      # the host is gone for good
        # its lease expires (10 s TTL), then the 2 s grace runs out
        assert wait_until(lambda: "orphan" not in hosts_names(lab, "net-1", a), timeout=25,
                          every=0.5)
        assert "orphan" not in lab.out("net-1", "service", "ls")
    finally:
        lab.down(quiet=True)
