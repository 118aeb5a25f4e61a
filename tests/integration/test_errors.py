"""Every user error: one line naming the bad value, exit code 1, nothing half-made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time



def fails(lab, host: str, *args: str, needle: str) -> str:
    proc = lab.ov(host, *args, check=False)
    assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert needle in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_unknown_network_and_container(lab2):
    before = lab2.netns_files("net-1")
    fails(lab2, "net-1", "run", "-d", "--net", "nosuchnet", "true", needle="'nosuchnet'")
    fails(lab2, "net-1", "network", "inspect", "nosuchnet", needle="nosuchnet")
    fails(lab2, "net-1", "network", "rm", "nosuchnet", needle="nosuchnet")
    for cmd in (["rm", "ghost"], ["stop", "ghost"], ["logs", "ghost"], ["inspect", "ghost"],
                ["exec", "ghost", "true"]):
        fails(lab2, "net-1", *cmd, needle="ghost")
    assert lab2.netns_files("net-1") == before


def test_bad_and_duplicate_names(lab2):
    fails(lab2, "net-1", "network", "create", "bad name", needle="'bad name'")
    fails(lab2, "net-1", "network", "create", "bridge", needle="'bridge'")
    lab2.ov("net-1", "network", "create", "dupe")
    try:
        fails(lab2, "net-2", "network", "create", "dupe", needle="'dupe' already exists")
        c = lab2.out("net-1", "run", "-d", "--net", "dupe", "--name", "twin", "sleep",
                     "infinity")
        fails(lab2, "net-1", "run", "-d", "--name", "twin", "true", needle="'twin'")
        fails(lab2, "net-1", "run", "-d", "--name", "-x", "true", needle="'-x'")
        # the service (container) name is unique within the network, across hosts
        fails(lab2, "net-2", "run", "-d", "--net", "dupe", "--name", "twin", "true",
              needle="'twin' is already published on network dupe")
        assert len(lab2.out("net-2", "ps", "-a", "-q").splitlines()) == 0
        fails(lab2, "net-2", "network", "rm", "dupe", needle="attached")
        lab2.ov("net-1", "rm", "-f", c)
    finally:
        lab2.ov("net-1", "network", "rm", "dupe")


def test_bad_subnets_and_gateways(lab2):
    for subnet, needle in (("10.0.0.0/33", "10.0.0.0/33"), ("banana", "banana"),
                           ("10.1.1.1/16", "host bits"), ("10.2.0.0/30", "too small")):
        fails(lab2, "net-1", "network", "create", "--subnet", subnet, "n1", needle=needle)
    fails(lab2, "net-1", "network", "create", "--subnet", "10.3.0.0/24", "--gateway",
          "10.4.0.1", "n1", needle="10.4.0.1")
    assert "n1" not in lab2.out("net-2", "network", "ls")


def test_exhausted_pool(lab2):
    lab2.ov("net-1", "network", "create", "--subnet", "10.9.9.0/29", "tiny")
    made = []
    try:
        for _ in range(5):      # .0 network, .1 gateway, .7 broadcast: 5 addresses left
            made.append(lab2.out("net-1", "run", "-d", "--net", "tiny", "sleep", "infinity"))
        files = lab2.netns_files("net-1")
        fails(lab2, "net-1", "run", "-d", "--net", "tiny", "true", needle="10.9.9.0/29 is full")
        fails(lab2, "net-2", "run", "-d", "--net", "tiny", "true", needle="10.9.9.0/29 is full")
        assert lab2.netns_files("net-1") == files
    finally:
        for c in made:
            lab2.ov("net-1", "rm", "-f", c)
        lab2.ov("net-1", "network", "rm", "tiny")


def test_rm_running_container_needs_force(lab2):
    c = lab2.out("net-1", "run", "-d", "sleep", "infinity")
    fails(lab2, "net-1", "rm", c, needle="running")
    lab2.ov("net-1", "stop", "-t", "1", c)
    assert "Exited" in lab2.out("net-1", "ps", "-a")
    lab2.ov("net-1", "rm", c)


def test_store_unreachable_is_reported_fast(lab2, tmp_path):
    t0 = time.monotonic()
    proc = lab2.run("net-1", ["overnet", "agent", "--store", "etcd://192.168.1.1:1",
                              "--name", "x", "--advertise", lab2.host("net-1").address,
                              "--socket", str(tmp_path / "s.sock"),
                              "--state-dir", str(tmp_path / "state")], timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1
    assert "192.168.1.1:1" in proc.stderr and "Traceback" not in proc.stderr


def test_agent_refuses_bad_advertise(lab2, tmp_path):
    proc = lab2.run("net-1", ["overnet", "agent", "--store", lab2.state.store_url,
                              "--name", "y", "--advertise", "10.254.254.254",
                              "--socket", str(tmp_path / "s.sock"),
                              "--state-dir", str(tmp_path / "state")], timeout=30)
    assert proc.returncode == 1 and "10.254.254.254" in proc.stderr


def test_cli_without_agent_says_how_to_start_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "overnet", "-H", f"unix://{tmp_path}/x.sock",
                           "ps"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": "src"})
    assert proc.returncode == 1
    assert "overnet agent --store" in proc.stderr and "x.sock" in proc.stderr


def etcdctl(lab, *args: str) -> subprocess.CompletedProcess:
    url = lab.state.store_url.replace("etcd://", "http://")
    return lab.run("store", ["etcdctl", "--endpoints", url, *args])


def test_bad_store_values_are_logged_and_skipped(lab2):
    c = lab2.out("net-1", "run", "-d", "sleep", "infinity")
    net_id = json.loads(lab2.out("net-1", "network", "inspect", "multihost"))[0]["id"]
    # records of the network a container is on: net-2 reads them for `network ls`
    garbage = {"/overnet/v1/networks/" + "ab" * 32: "{not json",
               "/overnet/v1/endpoints/" + net_id + "/x": '{"id": 5}',
               "/overnet/v1/services/" + net_id + "/y": "[]"}
    for key, value in garbage.items():
        assert etcdctl(lab2, "put", key, value).returncode == 0
    try:
        assert "multihost" in lab2.out("net-2", "network", "ls")
        lab2.out("net-2", "service", "ls")
        lab2.ov("net-1", "rm", "-f", c)
        log = open(lab2.agent_log(lab2.host("net-2"))).read()
        for key in garbage:
            assert key in log
    finally:
        for key in garbage:
            etcdctl(lab2, "del", key)
