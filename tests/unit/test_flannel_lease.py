"""Subnet leases in flannel's layout, over the in-memory store: key and value round trips
against literal flannel records, subnet choice, acquire / restart / renew / reclaim."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random

import pytest

from overnet.flannel import config as fc
from overnet.flannel.backend import vtep_mac
from overnet.flannel.lease import (LeaseAttrs, LeaseError, LeaseManager, choose_subnet, decode,
                                   parse_subnet_key, read_previous, subnet_key)
from overnet.agent.hostsubnet import write_subnet_env
from overnet.store.memory import MemoryState, MemoryStore

NET = ipaddress.IPv4Network
PREFIX = "/coreos.com/network"
CFG = fc.parse('{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}')


def run(coro):
    return asyncio.run(coro)


# --- records --------------------------------------------------------------------------------

FLANNEL_VALUES = [
    # flanneld 0.2x, etcd v3
    '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"c6:b5:3b:a7:4a:3c"}}',
    # older flanneld: no VNI in BackendData
    '{"PublicIP":"10.64.3.7","BackendType":"vxlan","BackendData":{"VtepMAC":"d6:51:2e:80:5c:69"}}',
    # host-gw: no BackendData at all
    '{"PublicIP":"172.17.50.1","BackendType":"host-gw"}',
]


def test_parse_literal_flannel_values():
    a, b, c = (LeaseAttrs.from_json(v) for v in FLANNEL_VALUES)
    assert a == LeaseAttrs("192.168.64.3", "vxlan", 1, "c6:b5:3b:a7:4a:3c")
    assert b == LeaseAttrs("10.64.3.7", "vxlan", None, "d6:51:2e:80:5c:69")
    assert c == LeaseAttrs("172.17.50.1", "host-gw")


def test_values_we_write_are_flannels_bytes():
    vx = LeaseAttrs("192.168.33.11", "vxlan", 1, "0e:9a:1b:2c:3d:4e")
    assert vx.to_json() == (b'{"PublicIP":"192.168.33.11","BackendType":"vxlan",'
                            b'"BackendData":{"VNI":1,"VtepMAC":"0e:9a:1b:2c:3d:4e"}}')
    assert LeaseAttrs("192.168.33.12", "host-gw").to_json() == \
        b'{"PublicIP":"192.168.33.12","BackendType":"host-gw"}'
    for v in FLANNEL_VALUES[1:]:    # those without PublicIPv6 come back byte for byte
        assert LeaseAttrs.from_json(v).to_json() == v.encode()


@pytest.mark.parametrize("bad", ['{"BackendType":"vxlan"}', '{"PublicIP":"nope"}', '[1]',
                                 '{"PublicIP":"1.2.3.4","BackendData":{"VtepMAC":"xx"}}',
                                 '{"PublicIP":"1.2.3.4","BackendData":{"VNI":"1"}}', 'nope'])
def test_bad_values_are_skipped(bad):
    assert decode(PREFIX, PREFIX + "/subnets/10.1.5.0-24", bad.encode()) is None


def test_key_round_trip():
    key = subnet_key(PREFIX, NET("10.1.5.0/24"))
    assert key == "/coreos.com/network/subnets/10.1.5.0-24"
    assert parse_subnet_key(PREFIX, key) == NET("10.1.5.0/24")
    assert parse_subnet_key(PREFIX, "/coreos.com/network/config") is None
    assert parse_subnet_key("/other", key) is None
    lease = decode(PREFIX, key, FLANNEL_VALUES[0].encode(), 7, 9)
    assert (lease.subnet, lease.attrs.public_ip, lease.lease_id) == (NET("10.1.5.0/24"),
                                                                     "192.168.64.3", 7)


def test_vtep_mac_is_stable_unicast_and_local():
    mac = vtep_mac("192.168.33.11", 1)
    assert mac == vtep_mac("192.168.33.11", 1) != vtep_mac("192.168.33.12", 1)
    first = int(mac.split(":")[0], 16)
    assert first & 1 == 0 and first & 2 == 2


def test_subnet_env_round_trip(tmp_path):
    path = str(tmp_path / "flannel" / "subnet.env")
    write_subnet_env(path, NET("10.1.0.0/16"), NET("10.1.5.0/24"), 1450, False)
    assert open(path).read() == ("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.5.1/24\n"
                                 "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    assert read_previous(path) == NET("10.1.5.0/24")
    assert read_previous(str(tmp_path / "missing")) is None


# --- subnet choice --------------------------------------------------------------------------

def test_choice_is_random_among_free_ones():
    rng = random.Random(1)
    seen = {choose_subnet(CFG, [], rng) for _ in range(200)}
    assert len(seen) > 50
    assert all(s.prefixlen == 24 and NET("10.1.1.0/24").network_address <= s.network_address
               <= NET("10.1.255.0/24").network_address for s in seen)
    assert NET("10.1.0.0/24") not in seen


def test_choice_skips_taken_and_overlapping():
    cfg = fc.parse('{"Network": "10.1.0.0/16", "SubnetMin": "10.1.1.0", '
                   '"SubnetMax": "10.1.4.0", "Backend": {"Type": "vxlan"}}')
    taken = [NET("10.1.1.0/24"), NET("10.1.2.0/23")]       # a /23 covers .2 and .3
    assert {choose_subnet(cfg, taken) for _ in range(50)} == {NET("10.1.4.0/24")}
    assert choose_subnet(cfg, taken + [NET("10.1.4.0/24")]) is None


# --- the manager ----------------------------------------------------------------------------

def manager(store, ip, cfg=CFG, **kw) -> LeaseManager:
    return LeaseManager(store, cfg, PREFIX, LeaseAttrs(ip, "vxlan", 1, vtep_mac(ip, 1)), **kw)


def test_three_hosts_three_subnets_in_flannel_format():
    async def go():
        st = MemoryState()
        leases = await asyncio.gather(*(manager(MemoryStore(st), f"192.168.33.{i}").acquire()
                                        for i in (11, 12, 13)))
        assert len({x.subnet for x in leases}) == 3
        kv = st.kvs[subnet_key(PREFIX, leases[0].subnet)]
        assert json.loads(kv.value) == {"PublicIP": "192.168.33.11", "BackendType": "vxlan",
                                        "BackendData": {"VNI": 1,
                                                        "VtepMAC": vtep_mac("192.168.33.11",
                                                                            1)}}
        assert kv.lease and st.leases[kv.lease].ttl == 24 * 3600
    run(go())


def test_restart_gets_same_subnet_and_keeps_its_etcd_lease():
    async def go():
        st = MemoryState()
        first = await manager(MemoryStore(st), "192.168.33.11").acquire()
        again = await manager(MemoryStore(st), "192.168.33.11").acquire()
        assert again.subnet == first.subnet and again.lease_id == first.lease_id
        assert len(st.leases) == 1                    # nothing leaked
    run(go())


def test_previous_subnet_from_subnet_env_if_free():
    async def go():
        st = MemoryState()
        prev = NET("10.1.77.0/24")
        got = await manager(MemoryStore(st), "192.168.33.11", previous=prev).acquire()
        assert got.subnet == prev
        # someone else holds it now: a new one
        other = await manager(MemoryStore(st), "192.168.33.12", previous=prev).acquire()
        assert other.subnet != prev
        # a previous subnet outside the config is ignored
        odd = await manager(MemoryStore(st), "192.168.33.13",
                            previous=NET("10.9.0.0/24")).acquire()
        assert odd.subnet.subnet_of(NET("10.1.0.0/16"))
    run(go())


def test_incompatible_old_lease_is_replaced():
    async def go():
        st = MemoryState()
        store = MemoryStore(st)
        old = NET("10.1.0.0/24")                       # below SubnetMin
        await store.put(subnet_key(PREFIX, old),
                        LeaseAttrs("192.168.33.11", "vxlan", 1, "0e:00:00:00:00:01").to_json())
        got = await manager(store, "192.168.33.11").acquire()
        assert got.subnet != old and subnet_key(PREFIX, old) not in st.kvs
    run(go())


def test_reservation_without_ttl_is_kept_as_is():
    async def go():
        st = MemoryState()
        store = MemoryStore(st)
        key = subnet_key(PREFIX, NET("10.1.9.0/24"))
        await store.put(key, b'{"PublicIP":"192.168.33.11","BackendType":"vxlan"}')
        m = manager(store, "192.168.33.11")
        got = await m.acquire()
        assert got.subnet == NET("10.1.9.0/24") and got.lease_id == 0
        assert m.renew_in() is None and st.kvs[key].lease == 0
        assert LeaseAttrs.from_json(st.kvs[key].value).vtep_mac    # value brought up to date
    run(go())


def test_full_network_is_a_clear_error():
    async def go():
        cfg = fc.parse('{"Network": "10.1.0.0/28", "Backend": {"Type": "vxlan"}}')  # 3 /30s
        st = MemoryState()
        for i in range(3):
            await manager(MemoryStore(st), f"192.168.33.{11 + i}", cfg).acquire()
        with pytest.raises(LeaseError, match=r"network 10.1.0.0/28 is full.*3 leases"):
            await manager(MemoryStore(st), "192.168.33.20", cfg).acquire()
    run(go())


def test_unreadable_record_still_blocks_its_subnet():
    async def go():
        cfg = fc.parse('{"Network": "10.1.0.0/28", "Backend": {"Type": "vxlan"}}')
        st = MemoryState()
        store = MemoryStore(st)
        for sub in ("10.1.0.4-30", "10.1.0.8-30"):
            await store.put(f"{PREFIX}/subnets/{sub}", b"garbage")
        got = await manager(store, "192.168.33.11", cfg).acquire()
        assert got.subnet == NET("10.1.0.12/30")
    run(go())


def test_many_hosts_racing_never_share():
    async def go():
        cfg = fc.parse('{"Network": "10.1.0.0/24", "SubnetLen": 28, '
                       '"Backend": {"Type": "vxlan"}}')                     # 15 subnets
        st = MemoryState()
        got = await asyncio.gather(*(manager(MemoryStore(st), f"192.168.33.{i}", cfg,
                                             rng=random.Random(0)).acquire()
                                     for i in range(15)))
        assert len({x.subnet for x in got}) == 15
    run(go())


def test_renew_and_reclaim():
    async def go():
        st = MemoryState()
        store = MemoryStore(st)
        m = manager(store, "192.168.33.11", ttl=3, renew_margin=2)
        lease = await m.acquire()
        assert 0.5 < m.renew_in() <= 1.0              # renewed `margin` before expiry
        await asyncio.sleep(1.5)
        await m.renew()
        assert m.renewals == 1
        await asyncio.sleep(2)                        # would have expired without renewal
        assert await store.get(m.key) is not None
        await store.delete(m.key)                     # removed by hand
        assert await m.reclaim()
        assert (await store.get(m.key)).value == m.attrs.to_json()
        st.revoke(m.lease.lease_id)                   # etcd lease gone too
        await m.renew()                               # re-created under a new etcd lease
        kv = await store.get(m.key)
        assert kv is not None and kv.lease != lease.lease_id
        # someone else took the subnet meanwhile: reclaim says so
        await store.put(m.key, LeaseAttrs("192.168.33.99", "vxlan", 1,
                                          "0e:00:00:00:00:09").to_json())
        assert not await m.reclaim()
    run(go())
