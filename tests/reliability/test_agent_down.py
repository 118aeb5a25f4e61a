"""An agent that is down is not a dead host: its containers keep their network, and what
changed while it was away is put right when it comes back."""

from __future__ import annotations

import os
import signal
import time

from tests.labfixture import wait_until
from tests.reliability.census import census, store_items

HOSTS = 3
AGENT_ARGS = ["--gc-grace", "3", "--resync-every", "1"]


def _ip(lab, host, c) -> str:
    return lab.inspect(host, c)["NetworkSettings"]["IPAddress"]


def _endpoint_hosts(lab) -> dict[str, str]:
    return {v["ip"]: v["host"] for k, v in store_items(lab, "/overnet/v1/endpoints/").items()}


def test_a_container_that_exits_while_its_agent_is_down(lab):
    cs = [lab.out("net-1", "run", "-d", "sleep", "infinity") for _ in range(4)]
    peer = lab.out("net-2", "run", "-d", "sleep", "infinity")
    ips = [_ip(lab, "net-1", c) for c in cs]
    victim = lab.inspect("net-1", cs[0])["State"]["Pid"]
    lab._sigkill(lab.host("net-1").agent_pid)
    os.kill(victim, signal.SIGKILL)
    lab.restart_agent("net-1")
    assert all(lab.ping("net-2", peer, ip, count=1) for ip in ips[1:])
    assert wait_until(lambda: ips[0] not in _endpoint_hosts(lab), timeout=5)
    assert wait_until(lambda: census(lab) == [], timeout=5), census(lab)
    for c in cs[1:]:
        lab.ov("net-1", "rm", "-f", c)
    lab.ov("net-1", "rm", "-f", cs[0])
    lab.ov("net-2", "rm", "-f", peer)


def test_gc_after_grace_with_a_live_host_behind_a_dead_agent(lab):
    c3 = lab.out("net-3", "run", "-d", "--name", "behind", "sleep", "infinity")
    c1 = lab.out("net-1", "run", "-d", "--name", "front", "sleep", "infinity")
    ip3 = _ip(lab, "net-3", c3)
    lab._sigkill(lab.host("net-3").agent_pid)
    t0 = time.monotonic()
    # its liveness lease (10 s) lapses, then the grace (3 s) passes: endpoints collected
    assert wait_until(lambda: ip3 not in _endpoint_hosts(lab), timeout=30)
    print(f"[gc] net-3's endpoint collected {time.monotonic() - t0:.1f}s after its agent died")
    others = [lab.out("net-1", "run", "-d", "sleep", "infinity") for _ in range(3)]
    assert ip3 not in {_ip(lab, "net-1", c) for c in others}   # its block is still net-3's
    lab.restart_agent("net-3")
    assert wait_until(lambda: _endpoint_hosts(lab).get(ip3) == "net-3", timeout=5)
    assert wait_until(lambda: lab.ping("net-1", c1, ip3, count=1), timeout=5)
    assert wait_until(lambda: census(lab) == [], timeout=5), census(lab)
    for c in [c1, *others]:
        lab.ov("net-1", "rm", "-f", c)
    lab.ov("net-3", "rm", "-f", c3)
