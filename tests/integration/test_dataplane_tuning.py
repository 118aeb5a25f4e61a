"""dataplane/tuning.py against the real kernel: bridge netfilter off in one namespace only."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from overnet.dataplane.tuning import BRIDGE_NF, SYSCTL_DIR, bridge_netfilter_off


def _read(ns: str | None, name: str) -> str | None:
    argv = ["cat", os.path.join(SYSCTL_DIR, name)]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture
def netns():
    name = f"ontune-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_bridge_netfilter_off_in_that_namespace_only(netns):
    root_before = {n: _read(None, n) for n in BRIDGE_NF}
    before = {n: _read(netns, n) for n in BRIDGE_NF}
    changed = bridge_netfilter_off(f"/run/netns/{netns}")
    after = {n: _read(netns, n) for n in BRIDGE_NF}
    if before["bridge-nf-call-iptables"] is None:      # br_netfilter not loaded here
        assert changed == [] and after == before
    else:
        assert sorted(changed) == sorted(n for n, v in before.items() if v == "1")
        assert set(after.values()) == {"0"}
        assert bridge_netfilter_off(f"/run/netns/{netns}") == []     # idempotent
    assert {n: _read(None, n) for n in BRIDGE_NF} == root_before    # host untouched


def test_bridge_netfilter_off_names_a_bad_namespace(tmp_path):
    with pytest.raises(OSError):
        bridge_netfilter_off(str(tmp_path / "no-such-netns"))
