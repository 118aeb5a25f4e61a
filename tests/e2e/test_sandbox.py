"""The sandbox's life cycle and the seed walkthrough, end to end, with nothing left behind."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from overnet.sandbox.lab import Lab, LabError
from overnet.sandbox.walkthrough import walk
from tests.labfixture import LabForTests, free_underlay


def overnet(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "overnet", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def leftovers(lab: Lab, pids: list[int]) -> list[str]:
    """What the lab could have left on this machine."""
    found = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n.split()[0]}" for n in ns.splitlines() if n.startswith(lab.name + "-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
              if line.split(":")[1].strip().startswith(lab.name + "-")]
    found += [f"process {p}" for p in pids if os.path.exists(f"/proc/{p}")
              and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if lab.name + "-" in line
                  or lab.dir in line]
    if os.path.exists(lab.dir):
        found.append(f"dir {lab.dir}")
    return found


def lab_pids(lab: Lab) -> list[int]:
    st = lab.state
    pids = [p for s in st.stores for p in (s.etcd_pid, s.holder_pid)]
    for h in st.hosts:
        pids += [h.agent_pid, h.holder_pid]
        for c in lab.client(h.name).get("/containers", all="1"):
            pids.append(c["State"]["Pid"])
    return [p for p in pids if p]


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


def new_lab(root: str) -> LabForTests:
    return LabForTests(f"e{secrets.token_hex(2)}", root=root, say=lambda m: None)


def test_walkthrough_then_down_leaves_nothing(root):
    lab = new_lab(root)
    out: list[str] = []
    try:
        ok = walk(lab, underlay=free_underlay(), echo=out.append)
        text = "\n".join(out)
        assert ok, text
        for needed in ("NETWORK ID", "multihost", "SERVICE ID", "foobar", "vxlan id", "gw0@vxlan0",
                       "2 received", "Every step went as the seed says"):
            assert needed in text, needed
        pids = lab_pids(lab)
    finally:
        pids = locals().get("pids", [])
        lab.down(quiet=True)
    assert leftovers(lab, pids) == []


def test_up_twice_down_twice_up_after_down(root):
    lab = new_lab(root)
    underlay = free_underlay()
    try:
        assert lab.up(hosts=1, underlay=underlay) is True
        first = [h.agent_pid for h in lab.state.hosts]
        again = Lab(lab.name, root=root, say=lambda m: None)
        assert again.up(hosts=1, underlay=underlay) is False          # nothing changed
        assert [h.agent_pid for h in Lab(lab.name, root=root).state.hosts] == first
        assert lab.down(quiet=True) is True
        assert lab.down(quiet=True) is False                          # nothing to do
        assert lab.up(hosts=1, underlay=underlay) is True             # up after down works
        assert all(r["alive"] for r in lab.status())
    finally:
        lab.down(quiet=True)
    assert leftovers(lab, []) == []


def test_cli_up_status_ssh_down(root):
    name = f"c{secrets.token_hex(2)}"
    env = {**os.environ}
    underlay = free_underlay()
    try:
        up = overnet("sandbox", "up", "--name", name, "--hosts", "1", "--underlay", underlay)
        assert up.returncode == 0, up.stderr
        assert "Current machine states" in up.stdout and "net-1" in up.stdout
        again = overnet("sandbox", "up", "--name", name, "--hosts", "1", "--underlay", underlay)
        assert again.returncode == 0 and "already up" in again.stderr
        st = overnet("sandbox", "status", "--name", name)
        assert "net-1" in st.stdout and "running" in st.stdout and "0 container" in st.stdout
        code = overnet("sandbox", "ssh", "--name", name, "net-1", "--", "sh", "-c", "exit 7")
        assert code.returncode == 7
        host = overnet("sandbox", "ssh", "--name", name, "net-1", "--", "hostname")
        assert host.stdout.strip() == "net-1"
        ls = overnet("sandbox", "ssh", "--name", name, "net-1", "--", "overnet", "network", "ls",
                     env=env)
        assert "multihost" in ls.stdout
        bad = overnet("sandbox", "ssh", "--name", name, "net-9", "--", "true")
        assert bad.returncode == 1 and "net-9" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        down = overnet("sandbox", "down", "--name", name)
    assert down.returncode == 0 and "down" in down.stdout + down.stderr
    again = overnet("sandbox", "down", "--name", name)
    assert again.returncode == 0 and "not up" in again.stdout
    missing = overnet("sandbox", "ssh", "--name", name, "net-1")
    assert missing.returncode == 1 and "not up" in missing.stderr


def test_failed_up_is_rolled_back(root):
    lab = new_lab(root)
    with pytest.raises(LabError, match="agent on net-1 did not start"):
        lab.up(hosts=2, underlay=free_underlay(), agent_args=["--vxlan-port", "notaport"])
    assert lab.state is None
    assert leftovers(lab, []) == []


def test_underlay_in_use_is_refused(root):
    """An underlay that overlaps an address of this machine is refused before anything is made."""
    lab = new_lab(root)
    dev = f"{lab.name}-x"
    subprocess.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "p"],
                   check=True)
    try:
        underlay = free_underlay()
        addr = underlay.replace("0/24", "1/24")
        subprocess.run(["ip", "addr", "add", addr, "dev", dev], check=True)
        with pytest.raises(LabError, match="already in use"):
            lab.up(hosts=1, underlay=underlay)
        with pytest.raises(LabError, match="banana"):
            lab.up(hosts=1, underlay="banana")
    finally:
        subprocess.run(["ip", "link", "del", dev])
    assert lab.state is None and leftovers(lab, []) == []
