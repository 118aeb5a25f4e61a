"""The fake data plane's test handles: fault injection, call log, corrupting state.

Its kernel-like behaviour is checked against the real kernel in
tests/integration/test_dataplane_contract.py; this covers what only the fake has.
"""

from __future__ import annotations

import pytest

from overnet.dataplane.api import Dataplane, DataplaneError
from overnet.dataplane.fake import FakeDataplane

NET, C = "/run/test/net1", "/run/test/c1"
MAC1, MAC2 = "02:42:0a:00:00:02", "02:42:0a:00:00:03"


async def plugged() -> FakeDataplane:
    dp = FakeDataplane(underlay="192.168.1.10/24")
    await dp.ensure_overlay(NET, 7, "10.0.0.1/24", 1450, "192.168.1.10")
    await dp.create_netns(C)
    await dp.attach_macvlan(NET, C, "10.0.0.2/24", MAC1, 1450)
    return dp


async def test_is_a_dataplane_and_needs_no_root() -> None:
    dp = await plugged()
    assert isinstance(dp, Dataplane)
    assert dp.link(C, "eth0").addresses == ["10.0.0.2/24"]
    assert dp.link(C, "eth0").lower == (NET, "vxlan0")


async def test_fail_next_before_leaves_no_effect() -> None:
    dp = await plugged()
    dp.fail_next("attach_macvlan")
    with pytest.raises(DataplaneError, match="injected failure in attach_macvlan"):
        await dp.attach_macvlan(NET, C, "10.0.0.3/24", MAC2, 1450, ifname="eth1")
    assert await dp.link_info(C, "eth1") is None
    # Only the next call fails.
    await dp.attach_macvlan(NET, C, "10.0.0.3/24", MAC2, 1450, ifname="eth1")
    assert await dp.link_info(C, "eth1") is not None


async def test_fail_next_after_applies_then_raises() -> None:
    dp = await plugged()
    dp.fail_next("detach_macvlan", OSError("crash"), after=True, times=2)
    for _ in range(2):
        with pytest.raises(OSError, match="crash"):
            await dp.detach_macvlan(C, "eth0", MAC1)
    assert await dp.link_info(C, "eth0") is None
    await dp.detach_macvlan(C, "eth0", MAC1)
    assert dp.count("detach_macvlan") == 3
    with pytest.raises(ValueError, match="'link'"):
        dp.fail_next("link")  # a test handle, not an operation


async def test_calls_are_logged() -> None:
    dp = await plugged()
    assert [c.method for c in dp.calls] == ["ensure_overlay", "create_netns", "attach_macvlan"]
    assert dp.calls[-1].args[:3] == (NET, C, "10.0.0.2/24")


async def test_corrupting_state() -> None:
    dp = await plugged()
    await dp.add_peer(NET, "02:42:0a:00:00:09", "10.0.0.9", "192.168.1.11")
    dp.remove_fdb(NET, "02:42:0a:00:00:09")
    assert await dp.peers(NET) == set()  # a neighbour without its FDB entry is no peer
    await dp.add_peer(NET, "02:42:0a:00:00:09", "10.0.0.9", "192.168.1.11")
    dp.remove_neigh(NET, "10.0.0.9")
    assert await dp.peers(NET) == set()

    dp.link(NET, "vxlan0").mtu = 1400
    assert (await dp.vxlan_info(NET))["mtu"] == 1400
    await dp.ensure_overlay(NET, 7, "10.0.0.1/24", 1450, "192.168.1.10")
    assert (await dp.vxlan_info(NET))["mtu"] == 1450  # converged back

    dp.drop_link(NET, "vxlan0")  # its macvlans go with it, wherever they are, as in the kernel
    assert await dp.link_info(C, "eth0") is None and await dp.link_info(NET, "gw0") is None
    await dp.ensure_overlay(NET, 7, "10.0.0.1/24", 1450, "192.168.1.10")
    await dp.attach_macvlan(NET, C, "10.0.0.2/24", MAC1, 1450)
    dp.drop_netns(C)
    assert not await dp.is_netns(C) and await dp.link_info(NET, "gw0") is not None
    with pytest.raises(DataplaneError, match=C):
        await dp.links(C)


async def test_name_clash_with_foreign_device() -> None:
    dp = await plugged()
    await dp.create_netns("/run/test/c2")
    dp.add_device("/run/test/c2", "eth0", kind="dummy")
    with pytest.raises(DataplaneError, match="already has a device named eth0"):
        await dp.attach_macvlan(NET, "/run/test/c2", "10.0.0.3/24", MAC2, 1450)
    assert (await dp.link_info("/run/test/c2", "eth0")).kind == "dummy"  # type: ignore[union-attr]
