"""The store goes away: starts fail cleanly and leave nothing, removals finish at once on
this host and in the store once it is back, and starts work again soon after it returns."""

from __future__ import annotations

import os
import signal
import time

from tests.labfixture import wait_until
from tests.reliability.census import census, store_items


def _stop_store(lab) -> None:
    lab._sigkill(lab.state.etcd_pid)


def test_a_start_during_an_outage_leaves_nothing_and_recovers_fast(lab):
    before = {h: lab.netns_files(h) for h in ("net-1", "net-2")}
    _stop_store(lab)
    try:
        proc = lab.ov("net-1", "run", "-d", "--name", "outage", "sleep", "infinity",
                      check=False)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "outage" not in lab.out("net-1", "ps", "-a")
        assert lab.netns_files("net-1") == before["net-1"]
    finally:
        lab._start_etcd()
    ready = time.monotonic()
    while True:
        proc = lab.ov("net-1", "run", "-d", "--name", "outage", "sleep", "infinity",
                      check=False)
        if proc.returncode == 0:
            break
        assert time.monotonic() - ready < 20, proc.stderr
        time.sleep(0.1)
    print(f"[outage] first start succeeded {time.monotonic() - ready:.2f}s after etcd was ready")
    assert wait_until(lambda: census(lab) == [], timeout=5), census(lab)
    lab.ov("net-1", "rm", "-f", "outage")


def test_rm_with_the_store_down_removes_at_once_and_records_later(lab):
    c = lab.out("net-1", "run", "-d", "--name", "going", "sleep", "infinity")
    info = lab.inspect("net-1", c)
    ip, sandbox = info["NetworkSettings"]["IPAddress"], info["NetworkSettings"]["SandboxKey"]
    pid = info["State"]["Pid"]
    _stop_store(lab)
    try:
        lab.ov("net-1", "rm", "-f", c)
        assert os.path.basename(sandbox) not in lab.netns_files("net-1")
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
        assert "going" not in lab.out("net-1", "ps", "-a")
    finally:
        lab._start_etcd()
    assert wait_until(lambda: ip not in {v["ip"] for v in store_items(
        lab, "/overnet/v1/endpoints/").values()}, timeout=10)
    assert wait_until(lambda: census(lab) == [], timeout=5), census(lab)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_sigstop_of_the_store_fails_starts_within_seconds(lab):
    os.kill(lab.state.etcd_pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        proc = lab.ov("net-1", "run", "-d", "sleep", "infinity", check=False)
        took = time.monotonic() - t0
        assert proc.returncode == 1, proc.stdout
        print(f"[outage] a start against a paused store failed after {took:.1f}s")
    finally:
        os.kill(lab.state.etcd_pid, signal.SIGCONT)
    assert wait_until(lambda: census(lab) == [], timeout=10), census(lab)
