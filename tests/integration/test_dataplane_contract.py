"""One contract, two data planes: every scenario runs against NetlinkDataplane (real kernel,
namespaces of a throwaway lab host) and FakeDataplane (memory), asserting the same observable
results through the Dataplane interface only. This is what shows the fake is faithful.

The real side needs root; its lab (unique names) is removed afterwards and checked for
leftovers, also when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from overnet.dataplane.api import Dataplane, DataplaneError, LinkInfo, NetlinkDataplane
from overnet.dataplane.fake import FakeDataplane
from overnet.dataplane.model import VXLAN_OVERHEAD, GwRoute, VxlanPeer

try:  # works whether or not tests/integration is a package
    from .netns_fixtures import destroy_lab, leftovers, make_lab
except ImportError:
    from netns_fixtures import destroy_lab, leftovers, make_lab

VNI, GW, MTU = 4242, "10.0.0.1/16", 1450
UNDERLAY = "192.168.77.1"  # the lab host's address (netns_fixtures), and the fake's


@dataclass
class Env:
    """A data plane plus where its namespaces go (paths under a directory of this test)."""

    kind: str
    dp: Dataplane
    root: str

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    async def container(self, name: str) -> str:
        path = self.path(f"c-{name}")
        await self.dp.create_netns(path)
        return path


@pytest.fixture(params=["netlink", "fake"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    if request.param == "fake":
        fake = FakeDataplane(underlay=f"{UNDERLAY}/24")
        yield Env("fake", fake, f"/nonexistent/overnet-fake-{secrets.token_hex(3)}")
        await fake.close()
        return
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    # pyroute2's sync sockets cannot be made on a thread running an event loop.
    lab = await asyncio.to_thread(make_lab, 1)
    dp = NetlinkDataplane(host_ns=lab.hosts[0].ns)
    try:
        yield Env("netlink", dp, os.path.join(lab.root, "ns"))
    finally:
        await dp.close()
        await asyncio.to_thread(destroy_lab, lab)
    assert await asyncio.to_thread(leftovers, lab) == []


def by_name(links: list[LinkInfo]) -> dict[str, LinkInfo]:
    return {li.name: li for li in links}


async def eventually(check: Callable[[], object]) -> bool:
    """Poll an async check: namespace teardown in the kernel is asynchronous."""
    for _ in range(100):
        if await check():  # type: ignore[misc]
            return True
        await asyncio.sleep(0.05)
    return False


async def overlay_with_container(env: Env, n: int = 2, net_name: str = "net1",
                                 vni: int = VNI) -> tuple[str, str]:
    net = env.path(net_name)
    await env.dp.ensure_overlay(net, vni, GW, MTU, UNDERLAY)
    c = await env.container(f"{net_name}-{n}")
    await env.dp.attach_macvlan(net, c, f"10.0.0.{n}/16", mac_of(n), MTU, gateway="10.0.0.1")
    return net, c


BR = "ovtbr0"   # a bridge of the (lab) host namespace, for veth pairs


async def bridge_with_container(env: Env, n: int = 2) -> str:
    await env.dp.ensure_bridge(BR, GW, MTU)
    c = await env.container(f"br-{n}")
    await env.dp.attach(None, c, f"veth{n:07x}", f"10.0.0.{n}/16", mac_of(n), MTU,
                        gateway="10.0.0.1", bridge=BR)
    return c


async def veths(dp: Dataplane) -> set[str]:
    return {li.name for li in await dp.links(None) if li.kind == "veth"}


def mac_of(i: int) -> str:
    return f"02:42:0a:00:00:{i:02x}"


# -- namespaces -------------------------------------------------------------------------------

async def test_namespaces(env: Env) -> None:
    dp, p = env.dp, env.path("n1")
    assert not await dp.is_netns(p)
    await dp.create_netns(p)
    await dp.create_netns(p)  # idempotent
    assert await dp.is_netns(p)
    assert await dp.list_netns(env.root) == ["n1"]
    assert await dp.list_netns(env.path("nothing-here")) == []
    (lo,) = await dp.links(p)
    assert (lo.name, lo.index, lo.kind, lo.mtu, lo.up, lo.addresses) == \
        ("lo", 1, None, 65536, True, ["127.0.0.1/8"])
    assert await dp.link_info(p, "lo") == lo
    assert await dp.link_info(p, "eth0") is None
    await dp.delete_netns(p)
    await dp.delete_netns(p)  # absent is fine
    assert not await dp.is_netns(p) and await dp.list_netns(env.root) == []
    with pytest.raises(DataplaneError, match=p):
        await dp.links(p)
    with pytest.raises(DataplaneError, match=p):
        await dp.link_info(p, "lo")
    with pytest.raises(DataplaneError, match="invalid interface name"):
        await dp.link_info(None, "way-too-long-name0")


# -- overlay networks -------------------------------------------------------------------------

async def test_overlay_devices_and_idempotence(env: Env) -> None:
    dp, net = env.dp, env.path("net1")
    await dp.ensure_overlay(net, VNI, GW, MTU, UNDERLAY)
    assert await dp.vxlan_info(net) == {
        "vni": VNI, "port": 4789, "local": UNDERLAY, "learning": False, "proxy": True,
        "l2miss": False, "l3miss": False, "mtu": MTU, "master": None, "up": True}
    links = by_name(await dp.links(net))
    assert set(links) == {"lo", "gw0", "vxlan0"}
    gw, vx = links["gw0"], links["vxlan0"]
    assert (gw.kind, gw.mtu, gw.up, gw.addresses, gw.master) == ("macvlan", MTU, True, [GW], None)
    assert (vx.kind, vx.mtu, vx.up, vx.master, vx.addresses) == ("vxlan", MTU, True, None, [])
    before = await dp.links(net)
    await dp.ensure_overlay(net, VNI, GW, MTU, UNDERLAY)
    assert await dp.links(net) == before  # same devices, same ifindexes, nothing changed
    # A new gateway and MTU converge in place.
    await dp.ensure_overlay(net, VNI, "10.0.0.254/16", 1400, UNDERLAY)
    links = by_name(await dp.links(net))
    assert links["gw0"].addresses == ["10.0.0.254/16"] and links["gw0"].mtu == 1400
    assert links["vxlan0"].mtu == 1400 and links["vxlan0"].index == vx.index
    assert await dp.underlay_mtu(UNDERLAY) - VXLAN_OVERHEAD == MTU


async def test_overlay_vni_changes_and_conflicts(env: Env) -> None:
    dp = env.dp
    net1, net2, net3 = env.path("net1"), env.path("net2"), env.path("net3")
    await dp.ensure_overlay(net1, VNI, GW, MTU, UNDERLAY)
    await dp.ensure_overlay(net1, VNI + 1, GW, MTU, UNDERLAY, port=4790)
    info = await dp.vxlan_info(net1)
    assert (info["vni"], info["port"], info["up"]) == (VNI + 1, 4790, True)
    # gw0 went with the old vxlan0 and is made again on the new one
    assert (await dp.link_info(net1, "gw0")).addresses == [GW]  # type: ignore[union-attr]
    # The first VNI was released at once and can serve another network.
    await dp.ensure_overlay(net2, VNI, "10.1.0.1/16", MTU, UNDERLAY)
    assert (await dp.vxlan_info(net2))["vni"] == VNI
    # A VNI in use on that port is refused, and the namespace made for it is removed again.
    with pytest.raises(DataplaneError, match=f"VNI {VNI + 1} on UDP port 4790 .*already used"):
        await dp.ensure_overlay(net3, VNI + 1, "10.2.0.1/16", MTU, UNDERLAY, port=4790)
    assert not await dp.is_netns(net3)
    with pytest.raises(DataplaneError, match="not-an-ip"):
        await dp.ensure_overlay(net3, 7, GW, MTU, "not-an-ip")
    with pytest.raises(DataplaneError, match="no vxlan0 in network namespace"):
        await dp.vxlan_info(await env.container("plain"))


async def test_remove_overlay(env: Env) -> None:
    dp = env.dp
    net, c = await overlay_with_container(env)
    await dp.remove_overlay(net)
    await dp.remove_overlay(net)  # absent is fine
    await dp.remove_peer(net, mac_of(3), "10.0.0.3", "192.168.77.2")
    assert not await dp.is_netns(net) and await dp.list_netns(env.root) == ["c-net1-2"]
    assert await dp.link_info(c, "eth0") is None  # unplugged synchronously
    await dp.ensure_overlay(net, VNI, GW, MTU, UNDERLAY)  # VNI reusable at once
    assert (await dp.vxlan_info(net))["vni"] == VNI


# -- containers on an overlay network: macvlans of vxlan0 -------------------------------------

async def test_attach_macvlan(env: Env) -> None:
    dp = env.dp
    net, c = await overlay_with_container(env)
    eth0 = await dp.link_info(c, "eth0")
    assert eth0 is not None
    assert (eth0.kind, eth0.mtu, eth0.mac, eth0.up, eth0.addresses, eth0.master) == \
        ("macvlan", MTU, mac_of(2), True, ["10.0.0.2/16"], None)
    assert {li.name for li in await dp.links(c)} == {"lo", "eth0"}
    assert (await dp.link_info(c, "lo")).up  # type: ignore[union-attr]
    assert {li.name for li in await dp.links(net)} == {"lo", "gw0", "vxlan0"}

    before = await dp.links(c)
    await dp.attach_macvlan(net, c, "10.0.0.2/16", mac_of(2), MTU, gateway="10.0.0.1")
    assert await dp.links(c) == before  # idempotent

    # A changed address and MTU converge on the same device.
    await dp.attach_macvlan(net, c, "10.0.0.9/16", mac_of(2), 1400)
    eth0b = await dp.link_info(c, "eth0")
    assert eth0b is not None
    assert (eth0b.index, eth0b.mtu, eth0b.addresses) == (eth0.index, 1400, ["10.0.0.9/16"])


async def test_attach_macvlan_errors(env: Env) -> None:
    dp = env.dp
    net = env.path("net1")
    await dp.ensure_overlay(net, VNI, GW, MTU, UNDERLAY)
    c = await env.container("err")
    cases = [
        (("10.0.0.9/99", mac_of(9), MTU), {}, "10.0.0.9/99"),
        (("10.0.0.9/16", "02:42:zz", MTU), {}, "02:42:zz"),
        (("10.0.0.9/16", mac_of(9), 10), {}, "mtu 10"),
        (("10.0.0.9/16", mac_of(9), MTU), {"gateway": "172.16.0.1"}, "eth0"),
        (("10.0.0.9/16", mac_of(9), MTU), {"ifname": "waytoolongname123"}, "waytoolongname123"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(DataplaneError, match=message):
            await dp.attach_macvlan(net, c, *args, **kwargs)  # type: ignore[arg-type]
    # Nothing half-made stays behind.
    assert {li.name for li in await dp.links(net)} == {"lo", "gw0", "vxlan0"}
    assert {li.name for li in await dp.links(c)} == {"lo"}
    missing = env.path("c-missing")
    with pytest.raises(DataplaneError, match=missing):
        await dp.attach_macvlan(net, missing, "10.0.0.9/16", mac_of(9), MTU)
    with pytest.raises(DataplaneError, match=env.path("net-missing")):
        await dp.attach_macvlan(env.path("net-missing"), c, "10.0.0.9/16", mac_of(9), MTU)
    await dp.attach_macvlan(net, c, "10.0.0.9/16", mac_of(9), MTU)
    # another endpoint's interface (its own MAC) under the same name is refused
    with pytest.raises(DataplaneError, match="already has a device named eth0"):
        await dp.attach_macvlan(net, c, "10.0.0.8/16", mac_of(8), MTU)
    assert (await dp.link_info(c, "eth0")).mac == mac_of(9)  # type: ignore[union-attr]


async def test_detach_macvlan(env: Env) -> None:
    dp = env.dp
    net, c = await overlay_with_container(env)
    await dp.detach_macvlan(c, "eth0", mac_of(3))    # not this endpoint's: left alone
    assert await dp.link_info(c, "eth0") is not None
    await dp.detach_macvlan(c, "eth0", mac_of(2))
    await dp.detach_macvlan(c, "eth0", mac_of(2))    # gone is fine
    assert await dp.link_info(c, "eth0") is None
    await dp.detach_macvlan(env.path("never-made"), "eth0", mac_of(2))


async def test_removing_the_network_unplugs_its_containers(env: Env) -> None:
    dp = env.dp
    net, c = await overlay_with_container(env)
    await dp.remove_overlay(net)
    assert await eventually(lambda: _gone(dp, c, "eth0"))


async def test_attach_handover(env: Env) -> None:
    """Docker's flow: the container's macvlan waits in the host namespace, down and
    unconfigured; the runtime moves it later, and puts it back there when the container
    leaves. A repeat changes nothing; detach removes it."""
    dp = env.dp
    net = env.path("net1")
    await dp.ensure_overlay(net, VNI, GW, MTU, UNDERLAY)
    await dp.attach_handover(net, "ovdhandover01", mac_of(7), MTU)
    peer = await dp.link_info(None, "ovdhandover01")
    assert peer is not None
    assert (peer.kind, peer.mac, peer.mtu, peer.up, peer.addresses) == \
        ("macvlan", mac_of(7), MTU, False, [])
    await dp.attach_handover(net, "ovdhandover01", mac_of(7), MTU)
    assert (await dp.link_info(None, "ovdhandover01")).index == peer.index  # type: ignore
    with pytest.raises(DataplaneError, match="already has a device named ovdhandover01"):
        await dp.attach_handover(net, "ovdhandover01", mac_of(8), MTU)
    with pytest.raises(DataplaneError, match="02:zz"):
        await dp.attach_handover(net, "ovdhandover02", "02:zz", MTU)
    await dp.detach_macvlan(None, "ovdhandover01", mac_of(7))
    assert await dp.link_info(None, "ovdhandover01") is None
    assert {li.name for li in await dp.links(net)} == {"lo", "gw0", "vxlan0"}


# -- containers on a bridge: veth pairs --------------------------------------------------------

async def test_attach(env: Env) -> None:
    dp = env.dp
    c = await bridge_with_container(env)
    eth0 = await dp.link_info(c, "eth0")
    host = await dp.link_info(None, "veth0000002")
    assert eth0 is not None and host is not None
    assert (eth0.kind, eth0.mtu, eth0.mac, eth0.up, eth0.addresses, eth0.master) == \
        ("veth", MTU, mac_of(2), True, ["10.0.0.2/16"], None)
    assert (host.kind, host.mtu, host.up, host.master, host.addresses) == \
        ("veth", MTU, True, BR, [])
    assert host.peer_index == eth0.index and eth0.peer_index == host.index
    assert {li.name for li in await dp.links(c)} == {"lo", "eth0"}
    assert (await dp.link_info(c, "lo")).up  # type: ignore[union-attr]

    before = (await dp.links(None), await dp.links(c))
    await dp.attach(None, c, "veth0000002", "10.0.0.2/16", mac_of(2), MTU, gateway="10.0.0.1",
                    bridge=BR)
    assert (await dp.links(None), await dp.links(c)) == before  # idempotent

    # A changed address, MAC and MTU converge on the same pair.
    await dp.attach(None, c, "veth0000002", "10.0.0.9/16", mac_of(9), 1400, bridge=BR)
    eth0b, hostb = await dp.link_info(c, "eth0"), await dp.link_info(None, "veth0000002")
    assert eth0b is not None and hostb is not None
    assert (eth0b.index, eth0b.mac, eth0b.mtu, eth0b.addresses) == \
        (eth0.index, mac_of(9), 1400, ["10.0.0.9/16"])
    assert (hostb.index, hostb.mtu, hostb.master) == (host.index, 1400, BR)
    await dp.detach(None, "veth0000002")
    await dp.remove_bridge(BR)


async def test_attach_replaces_stale_host_end(env: Env) -> None:
    dp = env.dp
    c = await bridge_with_container(env)
    # The container goes away; its host end is left behind (until the kernel reaps it).
    c2 = await env.container("second")
    await dp.attach(None, c2, "veth0000002", "10.0.0.2/16", mac_of(2), MTU, bridge=BR)
    host = await dp.link_info(None, "veth0000002")
    eth0 = await dp.link_info(c2, "eth0")
    assert host is not None and eth0 is not None and host.peer_index == eth0.index
    assert await dp.link_info(c, "eth0") is None  # the old pair went as a whole
    await dp.detach(None, "veth0000002")
    await dp.remove_bridge(BR)


async def test_attach_errors(env: Env) -> None:
    dp = env.dp
    await dp.ensure_bridge(BR, GW, MTU)
    c = await env.container("err")
    before = await veths(dp)
    cases = [
        (("vethwaytoolong123", "10.0.0.9/16", mac_of(9), MTU), {}, "vethwaytoolong123"),
        (("veth9", "10.0.0.9/99", mac_of(9), MTU), {}, "10.0.0.9/99"),
        (("veth9", "10.0.0.9/16", "02:42:zz", MTU), {}, "02:42:zz"),
        (("veth9", "10.0.0.9/16", mac_of(9), MTU), {"bridge": "nosuchbr"}, "no bridge nosuchbr"),
        (("veth9", "10.0.0.9/16", mac_of(9), 10), {}, "mtu 10"),
        (("veth9", "10.0.0.9/16", mac_of(9), MTU), {"gateway": "172.16.0.1"}, "veth9"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(DataplaneError, match=message):
            await dp.attach(None, c, *args, **{"bridge": BR, **kwargs})  # type: ignore[arg-type]
    # Nothing half-made stays behind.
    assert await veths(dp) == before
    assert {li.name for li in await dp.links(c)} == {"lo"}
    missing = env.path("c-missing")
    with pytest.raises(DataplaneError, match=missing):
        await dp.attach(None, missing, "veth9", "10.0.0.9/16", mac_of(9), MTU, bridge=BR)
    await dp.attach(None, c, "veth9", "10.0.0.9/16", mac_of(9), MTU, bridge=BR)
    with pytest.raises(DataplaneError, match="already has a device named eth0"):
        await dp.attach(None, c, "vethother", "10.0.0.9/16", mac_of(9), MTU, bridge=BR)
    assert await dp.link_info(None, "vethother") is None
    await dp.detach(None, "veth9")
    await dp.remove_bridge(BR)


async def test_detach(env: Env) -> None:
    dp = env.dp
    c = await bridge_with_container(env)
    await dp.detach(None, "veth0000002")
    await dp.detach(None, "veth0000002")  # gone is fine
    assert await dp.link_info(None, "veth0000002") is None
    assert await dp.link_info(c, "eth0") is None
    await dp.detach(env.path("never-made"), "veth0000002")
    await dp.remove_bridge(BR)


async def test_deleting_container_namespace_removes_its_pair(env: Env) -> None:
    dp = env.dp
    c = await bridge_with_container(env)
    await dp.delete_netns(c)
    assert await eventually(lambda: _gone(dp, None, "veth0000002"))
    await dp.remove_bridge(BR)


async def _gone(dp: Dataplane, ns: str | None, name: str) -> bool:
    return await dp.link_info(ns, name) is None


# -- local bridge in the host namespace --------------------------------------------------------

async def test_host_bridge(env: Env) -> None:
    dp = env.dp
    br = f"onb{secrets.token_hex(2)}"
    await dp.ensure_bridge(br, "172.31.0.1/24", 1500)
    await dp.ensure_bridge(br, "172.31.0.1/24", 1500)
    info = await dp.link_info(None, br)
    assert info is not None
    assert (info.kind, info.addresses, info.mtu, info.up) == \
        ("bridge", ["172.31.0.1/24"], 1500, True)
    c = await env.container("br")
    await dp.attach(None, c, "vbr2", "172.31.0.2/24", mac_of(2), 1500, gateway="172.31.0.1",
                    bridge=br)
    host = await dp.link_info(None, "vbr2")
    assert host is not None and host.master == br
    with pytest.raises(DataplaneError, match="not a bridge"):
        await dp.ensure_bridge("eth0", "10.3.0.1/24", 1500)
    await dp.detach(None, "vbr2")
    await dp.remove_bridge(br)
    await dp.remove_bridge(br)
    assert await dp.link_info(None, br) is None and await dp.link_info(c, "eth0") is None


# -- remote peers -----------------------------------------------------------------------------

async def test_peers(env: Env) -> None:
    dp, net = env.dp, env.path("net1")
    await dp.ensure_overlay(net, VNI, GW, MTU, UNDERLAY)
    want = {(mac_of(i), f"10.0.0.{i}", f"192.168.77.{i % 3 + 2}") for i in range(10, 16)}
    for p in want:
        await dp.add_peer(net, *p)
    await dp.add_peer(net, mac_of(10).upper(), "10.0.0.10", "192.168.77.3")  # replace, same
    assert await dp.peers(net) == want
    gone = (mac_of(10), "10.0.0.10", "192.168.77.3")
    await dp.remove_peer(net, *gone)
    await dp.remove_peer(net, *gone)  # missing is fine
    assert await dp.peers(net) == want - {gone}
    # A late removal of an old incarnation leaves the moved endpoint and the reused IP alone.
    moved = (mac_of(11), "10.0.0.11", "192.168.77.9")
    await dp.add_peer(net, *moved)
    await dp.remove_peer(net, mac_of(11), "10.0.0.11", "192.168.77.4")
    reused = ("02:42:0a:00:00:ff", "10.0.0.12", "192.168.77.2")
    await dp.add_peer(net, *reused)
    await dp.remove_peer(net, mac_of(12), "10.0.0.12", "192.168.77.2")
    peers = await dp.peers(net)
    assert moved in peers and reused in peers and not any(p[0] == mac_of(12) for p in peers)
    plain = await env.container("plain")
    with pytest.raises(DataplaneError, match="no vxlan0"):
        await dp.add_peer(plain, *moved)
    with pytest.raises(DataplaneError, match="no vxlan0"):
        await dp.peers(plain)
    await dp.remove_peer(plain, *moved)  # nothing to remove


async def test_add_peers(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    dp, net = env.dp, env.path("net1")
    await dp.ensure_overlay(net, VNI, GW, MTU, UNDERLAY)
    # More than one send's worth, one replacing an entry already there.
    first = (mac_of(20), "10.0.1.20", "192.168.77.2")
    await dp.add_peer(net, *first)
    want = [(mac_of(i), f"10.0.1.{i}", f"192.168.77.{i % 3 + 2}") for i in range(20, 100)]
    if env.kind == "netlink":   # batched for real: the one-at-a-time path is not taken
        from overnet.dataplane import vxlan

        def one_at_a_time(*_: object) -> None:
            raise AssertionError("add_peer called for a peer the batch should have added")
        monkeypatch.setattr(vxlan, "add_peer", one_at_a_time)
    await dp.add_peers(net, [(m.upper(), ip, vtep) for m, ip, vtep in want])
    assert await dp.peers(net) == set(want)
    monkeypatch.undo()
    plain = await env.container("plain")
    with pytest.raises(DataplaneError, match="no vxlan0"):
        await dp.add_peers(plain, want[:1])
    await dp.add_peers(net, [])


# -- host subnets (flannel backends) ----------------------------------------------------------

async def test_underlay(env: Env) -> None:
    dp = env.dp
    index, nets = await dp.underlay(UNDERLAY)
    eth0 = await dp.link_info(None, "eth0")
    assert eth0 is not None and index == eth0.index and nets == ["192.168.77.0/24"]
    assert await dp.underlay_mtu(UNDERLAY) == 1500
    for call in (dp.underlay, dp.underlay_mtu):
        with pytest.raises(DataplaneError, match="10.99.99.99"):
            await call("10.99.99.99")
    assert await dp.enable_forwarding() is True  # a fresh host namespace has it off
    assert await dp.enable_forwarding() is False


async def test_flannel_vxlan(env: Env) -> None:
    dp, dev, mac = env.dp, "flannel.1", "0a:bb:cc:dd:ee:01"
    assert await dp.ensure_vxlan(dev, 1, UNDERLAY, 8472, 1450, mac.upper(), "10.5.0.0") == mac
    assert await dp.ensure_vxlan(dev, 1, UNDERLAY, 8472, 1450, mac, "10.5.0.0") == mac
    info = await dp.link_info(None, dev)
    assert info is not None
    assert (info.kind, info.mac, info.mtu, info.up, info.addresses) == \
        ("vxlan", mac, 1450, True, ["10.5.0.0/32"])
    a = VxlanPeer("10.5.1.0/24", "192.168.77.2", "0a:bb:cc:dd:ee:02")
    b = VxlanPeer("10.5.2.0/24", "192.168.77.3", "0a:bb:cc:dd:ee:03")
    assert await dp.sync_vxlan(dev, {a, b}) == (6, 0)
    assert await dp.sync_vxlan(dev, {a, b}) == (0, 0)
    assert await dp.vxlan_peers(dev) == (
        {"10.5.1.0/24", "10.5.2.0/24"},
        {"10.5.1.0": a.vtep_mac, "10.5.2.0": b.vtep_mac},
        {a.vtep_mac: a.public_ip, b.vtep_mac: b.public_ip})
    b2 = VxlanPeer(b.subnet, "192.168.77.4", b.vtep_mac)  # the host moved
    assert await dp.sync_vxlan(dev, {a, b2}) == (1, 1)
    assert await dp.sync_vxlan(dev, set()) == (0, 6)
    assert await dp.vxlan_peers(dev) == (set(), {}, {})
    await dp.remove_link(dev)
    await dp.remove_link(dev)
    assert await dp.link_info(None, dev) is None
    assert await dp.vxlan_peers(dev) == (set(), {}, {})
    with pytest.raises(DataplaneError, match=dev):
        await dp.sync_vxlan(dev, {a})


async def test_host_gw(env: Env) -> None:
    dp = env.dp
    oif, _ = await dp.underlay(UNDERLAY)
    a, b = GwRoute("10.6.1.0/24", "192.168.77.2"), GwRoute("10.6.2.0/24", "192.168.77.3")
    assert await dp.sync_gw(oif, {a, b}) == (2, 0)
    assert await dp.sync_gw(oif, {a, b}) == (0, 0)
    assert await dp.gw_routes() == {a, b}
    assert await dp.sync_gw(oif, {a}) == (0, 1)
    with pytest.raises(DataplaneError, match="host-gw"):
        await dp.sync_gw(oif, {a, GwRoute("10.6.3.0/24", "10.99.0.1")})
    assert await dp.sync_gw(oif, set()) == (0, 1)
    assert await dp.gw_routes() == set()


async def test_close(env: Env) -> None:
    await env.dp.close()
    await env.dp.close()  # idempotent
    with pytest.raises(DataplaneError, match="closed"):
        await env.dp.is_netns(env.path("n1"))


def test_netlink_dataplane_takes_a_host_or_a_thread() -> None:
    from overnet.dataplane.worker import KernelThread

    thread = KernelThread()
    try:
        with pytest.raises(ValueError, match="not both"):
            NetlinkDataplane(host_ns="/proc/self/ns/net", thread=thread)
        assert NetlinkDataplane(thread=thread).thread is thread
    finally:
        thread.close()
