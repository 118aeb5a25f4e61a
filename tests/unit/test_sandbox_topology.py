"""The sandbox's plan and bookkeeping (pure logic: no namespaces, no processes)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from overnet.sandbox import topology
from overnet.sandbox.topology import Host, LabError, LabState

NET = ipaddress.IPv4Network("192.168.33.0/24")


def host(name: str, address: str, **kw: int) -> Host:
    return Host(name=name, netns=f"lab-{name}", address=address, veth=f"lab-{name[-1]}", **kw)


@pytest.mark.parametrize("args, message", [
    (("banana", 2, 1), "invalid --underlay 'banana'"),
    (("192.168.33.0/24", 0, 1), "invalid --hosts 0"),
    (("192.168.33.0/24", 2, 2), "invalid --store-members 2"),
    (("192.168.33.0/24", 2, 0), "invalid --store-members 0"),
    (("192.168.33.0/29", 2, 1), "too small for 2 hosts"),
])
def test_bad_plans_are_refused_naming_the_value(args: tuple, message: str) -> None:
    with pytest.raises(LabError, match=message):
        topology.check_plan(*args)


def test_store_hosts_count_down_from_10_and_hosts_up_from_11() -> None:
    assert topology.store_names(1) == ["store"]
    assert topology.store_names(3) == ["store-1", "store-2", "store-3"]
    assert [topology.store_address(NET, i) for i in range(3)] == \
        ["192.168.33.10", "192.168.33.9", "192.168.33.8"]
    assert [topology.host_address(NET, i) for i in (1, 2)] == ["192.168.33.11", "192.168.33.12"]
    assert topology.check_plan("192.168.33.0/24", 2, 3) == NET


def test_agents_get_every_member_and_the_first_store_stands_for_all() -> None:
    st = LabState(name="lab", underlay=str(NET), bridge="lab-br", stores=[
        host("store-1", "192.168.33.10", etcd_pid=11), host("store-2", "192.168.33.9"),
        host("store-3", "192.168.33.8")])
    assert st.store_url == \
        "etcd://192.168.33.10:2379,192.168.33.9:2379,192.168.33.8:2379"
    assert st.store is st.stores[0] and st.etcd_pid == 11
    m = st.stores[1]
    assert (m.client_url, m.peer_url) == ("http://192.168.33.9:2379", "http://192.168.33.9:2380")
    assert LabState(name="lab", underlay=str(NET), bridge="b").store_url == ""


def test_lab_json_round_trip(tmp_path) -> None:
    path = str(tmp_path / "lab" / "lab.json")
    st = LabState(name="lab", underlay=str(NET), bridge="lab-br",
                  hosts=[host("net-1", "192.168.33.11", holder_pid=5, agent_pid=6)],
                  stores=[host("store", "192.168.33.10", etcd_pid=7)],
                  flannel={"flannel-backend": "vxlan"}, agent_args=["--x"])
    topology.save(path, st)
    assert topology.load(path) == st
    assert topology.load(str(tmp_path / "missing.json")) is None


def test_lab_json_of_a_lab_made_before_store_clusters_still_loads(tmp_path) -> None:
    path = tmp_path / "lab.json"
    store = {"name": "store", "netns": "lab-store", "address": "192.168.33.10",
             "veth": "lab-v0", "holder_pid": 3, "agent_pid": 0}
    path.write_text(json.dumps({"name": "lab", "underlay": str(NET), "bridge": "lab-br",
                                "hosts": [], "store": store, "etcd_pid": 42,
                                "flannel": {}, "agent_args": []}))
    st = topology.load(str(path))
    assert st is not None and [h.name for h in st.stores] == ["store"]
    assert st.etcd_pid == 42 and st.store.holder_pid == 3
