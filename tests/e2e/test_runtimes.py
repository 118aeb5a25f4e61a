"""Real runtimes on one overlay network (issue: "a Podman container on one host, a Docker
container on another and an `overnet run` container on a third share one overlay network and
reach each other by address and by name"), and removing them leaves nothing behind."""

from __future__ import annotations

import json

import pytest

from tests.labfixture import keep_logs, make_lab, wait_until
from tests.reliability.census import census, store_items

IMAGE = "localhost/busybox"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtimes")
    lab = make_lab(str(root), hosts=3, runtimes=["podman", "docker"])
    try:
        yield lab
    finally:
        try:
            keep_logs(lab, str(root) + "-logs")
        finally:
            lab.down(quiet=True)


def sh(lab, host: str, *argv: str, check: bool = True) -> str:
    proc = lab.run(host, list(argv), timeout=120)
    if check:
        assert proc.returncode == 0, (host, argv, proc.stderr)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def pings(lab, host: str, prefix: list[str], target: str) -> bool:
    """Eventually (a new name or peer reaches the other hosts through their watch)."""
    return bool(wait_until(lambda: lab.run(host, [*prefix, "ping", "-c", "1", "-W", "1",
                                                  target]).returncode == 0, timeout=10,
                           every=0.3))


def test_podman_docker_and_overnet_on_one_network(lab):
    net = json.loads(lab.out("net-1", "network", "inspect", "multihost"))[0]
    sh(lab, "net-1", "podman", "run", "-d", "--name", "pm", "--network", "multihost", IMAGE,
       "sleep", "1000")
    sh(lab, "net-2", "docker", "run", "-d", "--name", "dk", "--network", "multihost",
       "--dns", net["gateway"], IMAGE, "sleep", "1000")
    own = lab.out("net-3", "run", "-d", "--name", "own", "sleep", "infinity")
    ip_pm = json.loads(sh(lab, "net-1", "podman", "inspect", "pm"))[0][
        "NetworkSettings"]["Networks"]["multihost"]["IPAddress"]
    ip_dk = json.loads(sh(lab, "net-2", "docker", "inspect", "dk"))[0][
        "NetworkSettings"]["Networks"]["multihost"]["IPAddress"]
    ip_own = lab.inspect("net-3", own)["NetworkSettings"]["IPAddress"]
    assert len({ip_pm, ip_dk, ip_own}) == 3
    runtimes = {v["ip"]: v["runtime"] for v in store_items(lab, "/overnet/v1/endpoints/")
                .values()}
    assert (runtimes[ip_pm], runtimes[ip_dk], runtimes[ip_own]) == ("cni", "docker", "overnet")
    podman, docker = ["podman", "exec", "pm"], ["docker", "exec", "dk"]
    ovr = ["overnet", "exec", own]
    for host, prefix, targets in (("net-1", podman, [ip_dk, ip_own, "dk", "own"]),
                                  ("net-2", docker, [ip_pm, ip_own, "own"]),
                                  ("net-3", ovr, [ip_pm, ip_dk, "dk"])):
        for target in targets:
            assert pings(lab, host, prefix, target), f"{prefix[0]} on {host} -> {target}"
    # Podman's container is named after its ID in DNS; Docker's after the container
    pm_name = json.loads(sh(lab, "net-1", "podman", "inspect", "pm"))[0]["Id"][:12]
    assert pings(lab, "net-2", docker, pm_name)
    assert pings(lab, "net-3", ovr, pm_name)
    # removing them leaves no veth, address, record or name behind on any host
    sh(lab, "net-1", "podman", "rm", "-f", "-t", "0", "pm")
    sh(lab, "net-2", "docker", "rm", "-f", "dk")
    lab.ov("net-3", "rm", "-f", own)
    assert wait_until(lambda: not ({ip_pm, ip_dk, ip_own} & {v["ip"] for v in store_items(
        lab, "/overnet/v1/endpoints/").values()}), timeout=10)
    assert wait_until(lambda: census(lab) == [], timeout=10), census(lab)
    for h in ("net-1", "net-2", "net-3"):
        assert lab.client(h).get("/endpoints") == []
