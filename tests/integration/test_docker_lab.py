"""The Docker plugin with real Docker 20.10: one dockerd per sandbox host (in that host's
namespaces, started with nsenter like bench/dockerlab.py), `docker network create -d overnet
--ipam-driver overnet web` on both hosts, containers that reach each other across hosts by
address and by name (overnet's DNS on the gateway), an `overnet run` container among them,
and nothing left behind once they are removed."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest

from bench.dockerlab import DockerLab, docker_missing
from overnet.sandbox.lab import _alive, _kill
from overnet.sandbox.runtimes import busybox_tar
from tests.labfixture import keep_logs, make_lab, wait_until

IMAGE = "busybox:overnet-test"


class Dockerds:
    """One dockerd per lab host; everything they made goes with stop(), even on failure."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.tag = f"ovdk-{lab.name}-{secrets.token_hex(2)}"
        self.pids: dict[str, int] = {}

    def start(self, host: str) -> None:
        """dockerd in the host's namespaces; --live-restore: containers outlive a restart."""
        h = self.lab.host(host)
        root = os.path.join(self.lab.dir, "docker", host)   # not among the logs kept
        os.makedirs(root, exist_ok=True)
        proc = self.lab.launch(h, "dockerd.log", [
            "dockerd", "--data-root", root, "--exec-root", "/run/docker",
            "--host", "unix:///run/docker.sock", "--pidfile", "/run/docker.pid",
            "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", self.tag,
            "--storage-driver", "vfs", "--bridge", "none", "--iptables=false",
            "--ip-masq=false", "--live-restore", "--log-level", "warn"])
        self.pids[host] = proc.pid
        ok = wait_until(lambda: os.path.exists(h.run_dir + "/docker.sock") and self.docker(
            host, "version", check=False).returncode == 0, timeout=60, every=0.2)
        assert ok, f"dockerd on {host} did not start: {self.log(host)}"

    def restart(self, host: str) -> None:
        _kill(self.pids.pop(host), timeout=20)
        self.start(host)

    def log(self, host: str) -> str:
        with open(os.path.join(self.lab.dir, host, "dockerd.log"), errors="replace") as f:
            return f.read()[-2000:]

    def docker(self, host: str, *args: str, check: bool = True, input: bytes | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
        sock = self.lab.host(host).run_dir + "/docker.sock"
        proc = subprocess.run(["docker", "-H", "unix://" + sock, *args], check=False,
                              capture_output=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on {host}: "
                                 f"{proc.stderr.decode(errors='replace').strip()}")
        return proc

    def out(self, host: str, *args: str) -> str:
        return self.docker(host, *args).stdout.decode().strip()

    def stop(self) -> None:
        for host, pid in self.pids.items():
            if _alive(pid):
                ids = self.docker(host, "ps", "-aq", check=False, timeout=30).stdout.split()
                if ids:
                    self.docker(host, "rm", "-f", *[i.decode() for i in ids], check=False)
            _kill(pid, timeout=20)
        DockerLab._kill_cgroup(self.tag)


@pytest.fixture(scope="module")
def docker_lab(tmp_path_factory):
    missing = docker_missing()
    assert missing is None, missing       # scripts/setup.sh installs docker.io and busybox
    root = tmp_path_factory.mktemp("dlab")
    lab = make_lab(str(root), agent_args=["--docker-plugin"])
    dockerds = Dockerds(lab)
    try:
        tar = busybox_tar()
        for h in lab.state.hosts:
            dockerds.start(h.name)
            dockerds.docker(h.name, "import", "-", IMAGE, input=tar)
        yield lab, dockerds
    finally:
        try:
            dockerds.stop()
            keep_logs(lab, str(root) + "-logs")
        finally:
            lab.down(quiet=True)


def net_info(dockerds: Dockerds, host: str, container: str) -> dict:
    data = json.loads(dockerds.out(host, "inspect", container))[0]
    return data["NetworkSettings"]["Networks"]["web"]


def ping(dockerds: Dockerds, host: str, container: str, target: str) -> bool:
    return dockerds.docker(host, "exec", container, "ping", "-c", "2", "-i", "0.2", "-W", "1",
                           target, check=False).returncode == 0


def reaches(dockerds: Dockerds, host: str, container: str, target: str) -> bool:
    """Eventually: a new endpoint's record reaches the other host through its watch."""
    return bool(wait_until(lambda: ping(dockerds, host, container, target), timeout=20,
                           every=0.5))


def test_docker_containers_on_two_hosts_share_the_overlay(docker_lab):
    lab, dk = docker_lab
    h1, h2 = (h.name for h in lab.state.hosts)
    for h in (h1, h2):
        dk.docker(h, "network", "create", "-d", "overnet", "--ipam-driver", "overnet", "web")
    web = wait_until(lambda: _network(lab, h1, "web"), timeout=15, every=0.2)
    assert web and web["driver"] == "overlay", "the overnet network web was not made"
    gw = web["gateway"]
    for h, c in ((h1, "c1"), (h2, "c2")):
        dk.docker(h, "run", "-d", "--name", c, "--network", "web", "--dns", gw, IMAGE,
                  "sleep", "1000")
    n1, n2 = net_info(dk, h1, "c1"), net_info(dk, h2, "c2")
    assert n1["IPAddress"] != n2["IPAddress"]
    assert n1["Gateway"] == gw                       # Docker shows Join's gateway
    route = dk.out(h1, "exec", "c1", "ip", "route")
    assert f"default via {gw}" in route, route
    # What the agent recorded is what the kernel holds once Docker moved and addressed eth0.
    check = lab.client(h1).get(f"/endpoints/{n1['EndpointID']}/eth0/check")
    assert check == {"ok": True, "problems": []}, check
    assert dk.out(h1, "exec", "c1", "cat", "/sys/class/net/eth0/mtu") == "1450"
    assert reaches(dk, h1, "c1", n2["IPAddress"]), "c1 cannot reach c2 by address"
    assert reaches(dk, h2, "c2", n1["IPAddress"]), "c2 cannot reach c1 by address"
    name2 = n2["EndpointID"][:12]
    assert reaches(dk, h1, "c1", name2), f"c1 cannot reach c2 by its endpoint's name {name2}"
    assert reaches(dk, h1, "c1", "c2"), "c1 cannot reach c2 by its container name"
    # A container of overnet's own runner on the same overlay network reaches both.
    lab.ov(h2, "run", "-d", "--name", "o1", "--net", "web", "sleep", "1000")
    assert wait_until(lambda: lab.ping(h2, "o1", n1["IPAddress"]), timeout=20, every=0.5)
    assert lab.ping(h2, "o1", n2["IPAddress"])
    # An agent restart, then a dockerd restart: connectivity stays, and so does clean-up.
    lab.restart_agent(h1)
    assert ping(dk, h1, "c1", n2["IPAddress"]) and ping(dk, h2, "c2", "c1")
    dk.docker(h1, "run", "-d", "--name", "c3", "--network", "web", "--dns", gw, IMAGE,
              "sleep", "1000")              # the new agent knows the pool from dockerd
    assert reaches(dk, h1, "c3", n2["IPAddress"])
    dk.restart(h2)
    assert ping(dk, h2, "c2", n1["IPAddress"]) and ping(dk, h1, "c1", "c2")
    # docker rm: no veth, no address, no record left on any host.
    for h, c in ((h1, "c1"), (h1, "c3"), (h2, "c2")):
        dk.docker(h, "rm", "-f", c)
    lab.ov(h2, "rm", "-f", "o1")
    for h in (h1, h2):
        assert lab.client(h).get("/endpoints", runtime="docker") == []
        links = lab.run(h, ["ip", "-o", "link"]).stdout
        assert "ovd" not in links, links
    for h in (h1, h2):       # no endpoint of web is left here: its namespace went too
        assert web["id"][:12] not in lab.netns_files(h)
    keys = lab.run("store", ["etcdctl", "--endpoints", lab.state.store_url.replace(
        "etcd://", "http://"), "get", "--prefix", "--keys-only",
        f"/overnet/v1/endpoints/{web['id']}/"]).stdout
    assert keys.strip() == "", keys
    for h in (h1, h2):
        dk.docker(h, "network", "rm", "web")
    assert _network(lab, h1, "web"), "docker network rm removed the cluster-wide network"


def _network(lab, host: str, name: str) -> dict | None:
    try:
        return lab.client(host).get(f"/networks/{name}")
    except Exception:  # noqa: BLE001 - not there yet
        return None
