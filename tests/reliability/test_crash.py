"""kill -9 of the agent at every point of a container start (and of a removal): after a
restart, a full census finds nothing left behind and the healthy containers untouched."""

from __future__ import annotations

import time

import pytest

from tests.labfixture import wait_until
from tests.reliability.census import census, container_link
from tests.reliability.conftest import agent_alive, arm_crash

# The points of a start, in order (agent/containers.py, agent/endpoints.py,
# dataplane/macvlan.py)
START_POINTS = ["create:journalled", "create:netns", "attach:reserved", "publish:before-txn",
                "publish:after-txn", "macvlan:created", "attach:kernel", "attach:both",
                "create:files", "create:spawned"]
AGENT_ARGS = ["--resync-every", "1"]


@pytest.fixture(scope="module")
def healthy(lab):
    """A container on each host that must never notice anything."""
    a = lab.out("net-1", "run", "-d", "--name", "steady1", "sleep", "infinity")
    b = lab.out("net-2", "run", "-d", "--name", "steady2", "sleep", "infinity")
    ip_a = lab.inspect("net-1", a)["NetworkSettings"]["IPAddress"]
    ip_b = lab.inspect("net-2", b)["NetworkSettings"]["IPAddress"]
    assert wait_until(lambda: lab.ping("net-2", b, ip_a, count=1), timeout=5)
    return {"a": a, "b": b, "ip_a": ip_a, "ip_b": ip_b,
            "eth0": container_link(lab, "net-1", a).split(":")[0]}


def _after_restart(lab, healthy) -> None:
    lab.restart_agent("net-1")
    problems = wait_until(lambda: census(lab) == [], timeout=5) or census(lab)
    assert problems is True or problems == [], problems
    assert lab.ping("net-1", healthy["a"], healthy["ip_b"], count=1)
    assert lab.ping("net-2", healthy["b"], healthy["ip_a"], count=1)
    # the very same interface (its ifindex), not one made again
    assert container_link(lab, "net-1", healthy["a"]).split(":")[0] == healthy["eth0"]


@pytest.mark.parametrize("point", START_POINTS)
def test_kill9_during_a_start_leaves_nothing(lab, healthy, point):
    arm_crash(lab, "net-1", point)
    t0 = time.monotonic()
    proc = lab.ov("net-1", "run", "-d", "--name", "victim", "sleep", "infinity", check=False)
    assert wait_until(lambda: not agent_alive(lab, "net-1"), timeout=10), \
        f"the agent did not reach {point}"
    print(f"[crash] {point}: agent died {time.monotonic() - t0:.3f}s into the start "
          f"(run exit {proc.returncode})")
    _after_restart(lab, healthy)
    # the name is free again, and a start works
    c = lab.out("net-1", "run", "-d", "--name", "victim", "sleep", "infinity")
    lab.ov("net-1", "rm", "-f", c)
    assert census(lab) == []


def test_kill9_during_a_removal_finishes_it_at_restart(lab, healthy):
    c = lab.out("net-1", "run", "-d", "--name", "leaving", "sleep", "infinity")
    arm_crash(lab, "net-1", "detach:kernel")
    lab.ov("net-1", "rm", "-f", c, check=False)
    assert wait_until(lambda: not agent_alive(lab, "net-1"), timeout=10)
    _after_restart(lab, healthy)
    lab.ov("net-1", "rm", "-f", c, check=False)
    assert census(lab) == []
