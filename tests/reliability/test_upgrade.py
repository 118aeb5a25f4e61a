"""An upgrade one host at a time: one host runs the agent of an earlier release, the others the
current one, and then it is upgraded in place; its containers reach and are reached by name
all along.

The earlier release is 3235215 (`data/overnet-3235215.tar.xz`, its `src/overnet`), from before
hosts wrote their membership of a network (`members/`, `present/`): the current agents must
adopt such a host onto the network (agent/membership.py), or its containers stay unreachable.
The tarball was made with
`git archive --prefix=overnet-3235215/ 3235215 src/overnet | xz -9`.
"""

from __future__ import annotations

import itertools
import json
import signal
import tarfile
import time
from pathlib import Path

import dns.message
import dns.query
import pytest

from overnet.dataplane import netns
from tests.labfixture import wait_until
from tests.reliability.census import census, store_items
from tests.reliability.conftest import restart_with

HOSTS = 3
AGENT_ARGS = ["--gc-grace", "3", "--resync-every", "1"]   # a collector that would act in time
RELEASE = "3235215"
TARBALL = Path(__file__).parent / "data" / f"overnet-{RELEASE}.tar.xz"


@pytest.fixture
def earlier_release(tmp_path) -> str:
    """The directory the earlier agent imports overnet from."""
    with tarfile.open(TARBALL) as tar:    # Debian 12's Python 3.11.2 has no filters yet
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                    else {}))
    src = tmp_path / f"overnet-{RELEASE}" / "src"
    assert (src / "overnet" / "agent" / "daemon.py").is_file()
    return str(src)


def _hosts_of(lab, kind: str) -> set[str]:
    """The hosts that have a `kind` record (members, present) on some network."""
    return {k.rsplit("/", 1)[1] for k in store_items(lab, f"/overnet/v1/{kind}/")}


def _agent_log(lab, host: str) -> str:
    with open(lab.agent_log(lab.host(host))) as f:
        return f.read()


def _start(lab, where: dict[str, str]) -> None:
    """One container a host: name -> the host it runs on."""
    for name, host in where.items():
        lab.ov(host, "run", "-d", "--name", name, "sleep", "infinity")


def _remove_leaving_nothing(lab, where: dict[str, str]) -> None:
    for name, host in where.items():
        lab.ov(host, "rm", "-f", name)
    assert wait_until(lambda: census(lab) == [], timeout=10), census(lab)


def _all_pairs_ping(lab, where: dict[str, str]) -> bool:
    return all(lab.ping(where[a], a, b, count=1)
               for a, b in itertools.permutations(where, 2))


def _dns_answers(lab, where: dict[str, str]) -> dict[str, list[str]]:
    """Each container's name asked of the resolver of every other container's network, from
    inside that container: 'a->b' -> the addresses answered."""
    net = json.loads(lab.out("net-1", "network", "inspect", "multihost"))[0]
    out = {}
    for a, b in itertools.permutations(where, 2):
        pid = lab.inspect(where[a], a)["State"]["Pid"]
        query = dns.message.make_query(f"{b}.{net['name']}.overnet", "A")
        with netns.entered(f"/proc/{pid}/ns/net"):
            answer = dns.query.udp(query, net["gateway"], timeout=2)
        out[f"{a}->{b}"] = sorted(rd.to_text() for rrset in answer.answer for rd in rrset)
    return out


def test_an_earlier_agent_on_one_host_then_upgraded_in_place(lab, earlier_release):
    restart_with(lab, "net-3", source=earlier_release)
    where = {"up-1": "net-1", "up-2": "net-2", "up-3": "net-3"}
    _start(lab, where)
    # The earlier agent wrote its endpoint and no membership: it is the earlier code that runs.
    assert "net-3" not in _hosts_of(lab, "members")
    assert {"net-1", "net-2"} <= _hosts_of(lab, "members")

    # Adopted after 5 s, at the latest on the next resync (1 s here): then every pair, by name.
    assert wait_until(lambda: _all_pairs_ping(lab, where), timeout=40, every=0.5), \
        "not every pair pings by name with an earlier agent on net-3"
    assert "net-3" in _hosts_of(lab, "members")
    assert "writes no membership (an older agent)" in \
        _agent_log(lab, "net-1") + _agent_log(lab, "net-2")
    assert "net-3" not in _hosts_of(lab, "present")    # the earlier agent writes none
    # every resolver, the earlier agent's too, answers for every container
    ips = {c: lab.inspect(h, c)["NetworkSettings"]["IPAddress"] for c, h in where.items()}
    assert _dns_answers(lab, where) == {f"{a}->{b}": [ips[b]]
                                        for a, b in itertools.permutations(where, 2)}
    # ... and no collector takes that for a death: net-3 is alive (`alive/net-3`)
    time.sleep(4)
    assert len(store_items(lab, "/overnet/v1/endpoints/")) == len(where)

    # A further container behind the earlier agent is reachable once its host is a member.
    lab.ov("net-3", "run", "-d", "--name", "up-3b", "sleep", "infinity")
    where["up-3b"] = "net-3"
    assert wait_until(lambda: lab.ping("net-1", "up-1", "up-3b", count=1), timeout=10)

    # The upgrade in place: stopped as a service manager stops it, started as the current one.
    lab.restart_agent("net-3", signal.SIGTERM)
    assert wait_until(lambda: "net-3" in _hosts_of(lab, "present"), timeout=10)
    assert wait_until(lambda: _all_pairs_ping(lab, where), timeout=20, every=0.5), \
        "not every pair pings by name after net-3 was upgraded"

    _remove_leaving_nothing(lab, where)


def test_the_first_host_upgraded_among_earlier_agents(lab, earlier_release):
    """The other way round: one host runs the current agent, the rest the earlier one (the
    first step of a rolling upgrade). The earlier agents know hosts by `hosts/<host>`, which
    the current agent still writes."""
    for host in ("net-2", "net-3"):
        restart_with(lab, host, source=earlier_release)
    where = {"first-1": "net-1", "first-2": "net-2", "first-3": "net-3"}
    _start(lab, where)
    assert _hosts_of(lab, "members") == {"net-1"}      # the earlier agents write none
    assert wait_until(lambda: _all_pairs_ping(lab, where), timeout=40, every=0.5), \
        "not every pair pings by name with one current agent among earlier ones"

    for host in ("net-2", "net-3"):
        lab.restart_agent(host, signal.SIGTERM)
    assert wait_until(lambda: {"net-1", "net-2", "net-3"} <= _hosts_of(lab, "present"),
                      timeout=10)
    assert wait_until(lambda: _all_pairs_ping(lab, where), timeout=20, every=0.5), \
        "not every pair pings by name after every host was upgraded"

    _remove_leaving_nothing(lab, where)
