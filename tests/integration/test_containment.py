"""Contained containers, for real: two hosts of a sandbox lab with real agents.

A container has its own PID namespace (its /proc shows only its processes), Docker's default
capabilities, no_new_privs, and cannot see the agent's socket or state; `--privileged` gives all
of that back. The CLI's foreground path and `exec` are contained the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from overnet.runtime import caps
from overnet.runtime.identity import pid_in_container
from overnet.runtime.supervise import REAPER_BIN
from tests.labfixture import wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(300),
]

DOCKER_CAPEFF = "00000000a80425fb"


@pytest.fixture(scope="module")
def boxes(lab2):
    """cnt-a (net-1), cnt-b (net-2): contained; cnt-p (net-1): privileged. Removed after."""
    made = []
    try:
        for host, name, extra in (("net-1", "cnt-a", []), ("net-2", "cnt-b", []),
                                  ("net-1", "cnt-p", ["--privileged"])):
            lab2.ov(host, "run", "-d", "--name", name, *extra, "sleep", "infinity")
            made.append((host, name))
        yield lab2
    finally:
        for host, name in made:
            lab2.ov(host, "rm", "-f", name, check=False)


def ex(lab, host: str, name: str, *cmd: str) -> subprocess.CompletedProcess:
    return lab.ov(host, "exec", name, *cmd, check=False)


def status(text: str) -> dict[str, str]:
    fields = (line.partition(":") for line in text.splitlines())
    return {k: v.strip() for k, _, v in fields}


def proc_pids(text: str) -> set[int]:
    return {int(w) for w in text.split() if w.isdigit()}


# --- PID namespace ---------------------------------------------------------------------------


def test_ps_and_proc_show_only_the_containers_processes(boxes) -> None:
    ps = ex(boxes, "net-1", "cnt-a", "ps", "-e", "-o", "pid=,comm=")
    assert ps.returncode == 0, ps.stderr
    rows = {int(p): comm for p, comm in (line.split(None, 1) for line in ps.stdout.splitlines())}
    # the tiny init, the container's command, and ps itself (a child of exec's waiter)
    assert rows.pop(1) == "overnet-init" and rows.pop(2) == "sleep"
    assert list(rows.values()) == ["ps"], rows
    ls = ex(boxes, "net-1", "cnt-a", "ls", "/proc")
    assert len(proc_pids(ls.stdout)) == 3 and {1, 2} <= proc_pids(ls.stdout)
    agent_pid = boxes.host("net-1").agent_pid
    assert ex(boxes, "net-1", "cnt-a", "test", "-e", f"/proc/{agent_pid}").returncode != 0
    # The init began as a fork of the agent: it shows none of the agent's command line or
    # environment, and keeps none of its memory (it runs the compiled reaper, which set-up
    # builds with gcc, not a copy of the agent)
    init = ex(boxes, "net-1", "cnt-a", "cat", "/proc/1/cmdline").stdout.split("\0")
    assert init == [REAPER_BIN, "2", "1", "overnet-init", ""], init
    assert ex(boxes, "net-1", "cnt-a", "cat", "/proc/1/environ").returncode != 0
    rss = ex(boxes, "net-1", "cnt-a", "grep", "VmRSS", "/proc/1/status").stdout.split()
    assert int(rss[1]) < 1024, rss              # kB: not the agent's ~55 MB


def test_foreground_container_has_its_own_pids(boxes) -> None:
    # `overnet run` without -d: the CLI is the parent, and it is contained all the same.
    out = boxes.out("net-1", "run", "--rm", "sh", "-c",
                    "echo $$; ls /proc; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    first, *rest = out.splitlines()
    assert first == "2"
    assert proc_pids(" ".join(line for line in rest if ":" not in line)) <= {1, 2, 3, 4}
    st = status("\n".join(line for line in rest if ":" in line))
    assert st == {"CapEff": DOCKER_CAPEFF, "NoNewPrivs": "1"}


def test_exec_enters_the_pid_namespace(boxes) -> None:
    r = ex(boxes, "net-1", "cnt-a", "sh", "-c",
           "readlink /proc/self/ns/pid /proc/2/ns/pid; cat /proc/1/comm")
    mine, main, init = r.stdout.split()
    assert mine == main and init == "overnet-init"


def test_stop_reaches_the_command_through_init(boxes) -> None:
    # SIGTERM passes waiter -> init -> sleep: it dies of SIGTERM (143), not of the SIGKILL the
    # agent sends after the grace period (137), which is what a PID-1 sleep would get.
    cid = boxes.out("net-1", "run", "-d", "sleep", "600")
    try:
        boxes.ov("net-1", "stop", "-t", "60", cid)
        assert boxes.inspect("net-1", cid)["State"]["ExitCode"] == 143
    finally:
        boxes.ov("net-1", "rm", "-f", cid, check=False)


# --- capabilities ----------------------------------------------------------------------------


def test_capabilities_are_dockers(boxes) -> None:
    for who in ("self", "2"):   # exec's process, and the container's command
        r = ex(boxes, "net-1", "cnt-a", "cat", f"/proc/{who}/status")
        st = status(r.stdout)
        assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == DOCKER_CAPEFF, who
        assert st["CapInh"] == st["CapAmb"] == "0000000000000000"
        assert st["NoNewPrivs"] == "1"
    assert caps.names(int(DOCKER_CAPEFF, 16)) == sorted(caps.DOCKER_DEFAULT,
                                                         key=lambda n: caps.CAPS[n])


def test_no_links_no_foreign_namespaces(boxes) -> None:
    add = ex(boxes, "net-1", "cnt-a", "ip", "link", "add", "x0", "type", "veth", "peer",
             "name", "y0")
    assert add.returncode != 0 and "Operation not permitted" in add.stderr
    key = boxes.inspect("net-1", "cnt-a")["NetworkSettings"]["SandboxKey"]
    links = boxes.sh("net-1", "nsenter", f"--net={key}", "ip", "-o", "link").stdout
    assert "x0" not in links and "y0" not in links
    assert ex(boxes, "net-1", "cnt-a", "nsenter", "--net=/proc/1/ns/net", "true").returncode != 0
    # another container's namespace, by the path the agent pinned it at
    other = boxes.inspect("net-1", "cnt-p")["NetworkSettings"]["SandboxKey"]
    assert ex(boxes, "net-1", "cnt-a", "nsenter", f"--net={other}", "true").returncode != 0
    assert ex(boxes, "net-1", "cnt-a", "unshare", "--net", "true").returncode != 0
    assert ex(boxes, "net-1", "cnt-a", "mount", "-t", "tmpfs", "x", "/mnt").returncode != 0


def test_ping_still_works(boxes) -> None:
    assert boxes.ping("net-1", "cnt-a", "cnt-b")    # NET_RAW kept; across hosts
    assert boxes.ping("net-2", "cnt-b", "cnt-a")


# --- the agent's files -----------------------------------------------------------------------


def test_agent_socket_and_state_are_hidden(boxes) -> None:
    info = boxes.client("net-1").get("/info")
    spec = boxes.inspect("net-1", "cnt-a")["Spec"]
    assert info["state_dir"] in spec["hide"] and "/run/overnet" in spec["hide"]
    assert ex(boxes, "net-1", "cnt-a", "test", "-e", "/run/overnet/overnet.sock").returncode != 0
    listing = ex(boxes, "net-1", "cnt-a", "ls", "-A", info["state_dir"])
    assert listing.returncode == 0 and listing.stdout == ""
    # and the CLI inside cannot talk to the agent: one line naming the socket
    r = ex(boxes, "net-1", "cnt-a", sys.executable, "-m", "overnet", "ps")
    assert r.returncode == 1
    assert r.stderr == ("Error: cannot reach the agent at unix:///run/overnet/overnet.sock: "
                        "no such socket (is the agent running? Start it with: "
                        "overnet agent --store etcd://HOST:2379 --name NAME --advertise "
                        "ADDRESS)\n")
    # the host still has them
    assert os.path.exists(boxes.host("net-1").socket)


def test_privileged_gets_everything_back(boxes) -> None:
    st = status(ex(boxes, "net-1", "cnt-p", "cat", "/proc/self/status").stdout)
    with open("/proc/self/status") as f:
        ours = status(f.read())["CapEff"]   # every capability root has here
    assert st["CapEff"] == ours and st["NoNewPrivs"] == "0"
    agent_pid = boxes.host("net-1").agent_pid
    assert ex(boxes, "net-1", "cnt-p", "test", "-e", f"/proc/{agent_pid}").returncode == 0
    assert ex(boxes, "net-1", "cnt-p", "test", "-S", "/run/overnet/overnet.sock").returncode == 0
    add = ex(boxes, "net-1", "cnt-p", "ip", "link", "add", "x0", "type", "veth", "peer",
             "name", "y0")
    assert add.returncode == 0, add.stderr
    assert ex(boxes, "net-1", "cnt-p", "ip", "link", "del", "x0").returncode == 0
    assert boxes.inspect("net-1", "cnt-p")["Spec"]["privileged"] is True


# --- process identity ------------------------------------------------------------------------


def test_pid_in_container(boxes) -> None:
    h = boxes.host("net-1")
    c = boxes.inspect("net-1", "cnt-a")
    netns = h.run_dir + c["NetworkSettings"]["SandboxKey"].removeprefix("/run")
    assert pid_in_container(c["State"]["Pid"], netns) is None
    why = pid_in_container(h.agent_pid, netns)
    assert why and "not in the container's network namespace" in why
    # in the right network namespace, but the host's (our) mount namespace
    fake = subprocess.Popen(["nsenter", f"--net={netns}", "sleep", "60"])
    try:
        # (once nsenter has joined the namespace and exec'd sleep)
        assert wait_until(lambda: os.readlink(f"/proc/{fake.pid}/exe").endswith("sleep"))
        why = pid_in_container(fake.pid, netns)
        assert why and "mount namespace" in why
    finally:
        fake.kill()
        fake.wait()
    assert "does not exist" in (pid_in_container(fake.pid, netns) or "")


# --- the CLI's errors ------------------------------------------------------------------------


def test_cli_as_non_root_gets_one_line(boxes) -> None:
    r = boxes.sh("net-1", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-m", "overnet", "ps")
    assert r.returncode == 1
    assert r.stderr == ("Error: cannot reach the agent at unix:///run/overnet/overnet.sock: "
                        "permission denied (run as root)\n")


def test_cli_missing_socket_is_one_line(tmp_path) -> None:
    sock = f"{tmp_path}/none/overnet.sock"
    r = subprocess.run([sys.executable, "-m", "overnet", "-H", f"unix://{sock}", "ps"],
                       check=False, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"Error: cannot reach the agent at unix://{sock}: no such socket")
