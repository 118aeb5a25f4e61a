"""The agent side of host subnets that needs no kernel: reading (or writing) the network
config before leasing, and the API helpers, over the in-memory store."""

from __future__ import annotations

import asyncio
import json
import pytest

from overnet.agent import hostsubnet
from overnet.agent.config import AgentConfig
from overnet.errors import Invalid, NotFound
from overnet.store.memory import MemoryState, MemoryStore

KEY = "/coreos.com/network/config"


def subnets(store, **cfg) -> hostsubnet.HostSubnet:
    base = dict(flannel=True, subnet_prefix="/coreos.com/network", subnet_file="/nonexistent",
                ip_masq=False, flannel_network=None, flannel_backend="vxlan")
    config = AgentConfig(store="memory://", name="h1", advertise="192.168.1.1",
                         **{**base, **cfg})
    return hostsubnet.HostSubnet(store, None, config, None)


def test_waits_for_a_config_written_later():
    async def go():
        store = MemoryStore(MemoryState())
        hs = subnets(store)
        task = asyncio.create_task(hs._config())
        await asyncio.sleep(1.2)
        assert not task.done()                    # no config yet: it waits, like flanneld
        await store.put(KEY, b'{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}')
        cfg = await asyncio.wait_for(task, 3)
        assert str(cfg.network) == "10.5.0.0/16" and cfg.backend == "host-gw"
    asyncio.run(go())


def test_flannel_network_writes_the_config_only_if_absent():
    async def go():
        store = MemoryStore(MemoryState())
        cfg = await subnets(store, flannel_network="10.1.0.0/16",
                            flannel_backend="host-gw")._config()
        assert cfg.backend == "host-gw"
        stored = json.loads((await store.get(KEY)).value)
        assert stored["Network"] == "10.1.0.0/16" and stored["Backend"]["Type"] == "host-gw"
        # a second host asking for something else gets the cluster's config
        b = subnets(store, flannel_network="10.9.0.0/16")
        assert str((await b._config()).network) == "10.1.0.0/16"
    asyncio.run(go())


def test_a_bad_config_in_the_store_is_a_clear_error():
    async def go():
        store = MemoryStore(MemoryState())
        await store.put(KEY, b'{"Network": "10.1.0.0/16", "SubnetLen": 40, '
                             b'"Backend": {"Type": "vxlan"}}')
        with pytest.raises(Invalid, match=r"network config at /coreos.com/network/config: "
                                          r"SubnetLen 40 must be less than /31"):
            await subnets(store)._config()
        with pytest.raises(Invalid, match="--flannel-network"):
            await subnets(MemoryStore(MemoryState()), flannel_network="10.1.0.0/33")._config()
    asyncio.run(go())


def test_api_helpers():
    async def go():
        store = MemoryStore(MemoryState())
        a = "/my/net"
        with pytest.raises(NotFound, match="no network config at /my/net/config"):
            await hostsubnet.get_config(store, a)
        with pytest.raises(Invalid, match="SubnetMax is not in the range"):
            await hostsubnet.put_config(store, a, {"network": "10.1.0.0/16", "subnet_max": "10.2.0.0"})
        with pytest.raises(Invalid, match="subnet_len"):
            await hostsubnet.put_config(store, a, {"network": "10.1.0.0/16", "subnet_len": "24"})
        put = await hostsubnet.put_config(store, a, {"network": "10.1.0.0/16", "subnet_len": 26})
        got = await hostsubnet.get_config(store, a)
        assert got["config"] == put["config"] and got["config"]["SubnetLen"] == 26
        await store.put("/my/net/subnets/10.1.0.64-26",
                        b'{"PublicIP":"192.168.1.2","BackendType":"host-gw"}')
        assert [x["subnet"] for x in await hostsubnet.list_leases(store, a)] == ["10.1.0.64/26"]
    asyncio.run(go())


def test_bridge_network_id_is_one_per_prefix():
    one = hostsubnet.bridge_network_id("/coreos.com/network")
    assert len(one) == 64 and one == hostsubnet.bridge_network_id("/coreos.com/network")
    assert one != hostsubnet.bridge_network_id("/other")
