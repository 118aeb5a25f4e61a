"""Real runtimes on one overlay network: a Podman container (through overnet-cni) and an
`overnet run` container on other hosts reach each other by address and by name, and
removing them leaves nothing behind."""

from __future__ import annotations

import json

import pytest

from tests.labfixture import keep_logs, make_lab, wait_until
from tests.reliability.census import census, store_items


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtimes")
    lab = make_lab(str(root), hosts=2, runtimes=["podman"])
    try:
        yield lab
    finally:
        keep_logs(lab, str(root) + "-logs")
        lab.down(quiet=True)


def podman(lab, host: str, *args: str):
    proc = lab.run(host, ["podman", *args], timeout=120)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.strip()


def test_podman_and_overnet_share_one_network_by_address_and_name(lab):
    podman(lab, "net-1", "run", "-d", "--name", "pm", "--network", "multihost",
           "localhost/busybox", "sleep", "1000")
    own = lab.out("net-2", "run", "-d", "--name", "own", "sleep", "infinity")
    ip_own = lab.inspect("net-2", own)["NetworkSettings"]["IPAddress"]
    pm = json.loads(podman(lab, "net-1", "inspect", "pm"))[0]
    ip_pm = pm["NetworkSettings"]["Networks"]["multihost"]["IPAddress"]
    eps = {v["ip"]: v for v in store_items(lab, "/overnet/v1/endpoints/").values()}
    assert eps[ip_pm]["runtime"] == "cni" and eps[ip_pm]["host"] == "net-1"
    # by address, both ways, and by name through overnet's DNS on the gateway
    assert podman(lab, "net-1", "exec", "pm", "ping", "-c", "1", "-W", "2", ip_own)
    assert lab.ping("net-2", own, ip_pm, count=1)
    assert wait_until(lambda: lab.run("net-1", ["podman", "exec", "pm", "ping", "-c", "1",
                                                "-W", "2", "own"]).returncode == 0, timeout=5)
    assert "nameserver" in podman(lab, "net-1", "exec", "pm", "cat", "/etc/resolv.conf")
    name = pm["Id"][:12]
    answer = lab.ov("net-2", "exec", own, "getent", "hosts", name, check=False).stdout
    assert ip_pm in answer, answer
    # podman rm: no veth, address, record or name left anywhere
    podman(lab, "net-1", "rm", "-f", "-t", "0", "pm")
    lab.ov("net-2", "rm", "-f", own)
    assert wait_until(lambda: ip_pm not in {v["ip"] for v in store_items(
        lab, "/overnet/v1/endpoints/").values()}, timeout=5)
    assert wait_until(lambda: census(lab) == [], timeout=5), census(lab)
    assert lab.client("net-1").get("/endpoints") == []
