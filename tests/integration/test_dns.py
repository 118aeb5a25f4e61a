"""The resolver inside real network namespaces (root): listening sockets in the network's
namespace, forwarding sockets in the caller's, queried from inside by dnspython and by glibc."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from pyroute2 import IPRoute

from overnet.dataplane import netns
from overnet.dns import DnsServer, Entry, NameTable, Resolvers, ResolverSpec, resolv_conf
from tests.fake_upstream import FakeUpstream

T = TypeVar("T")
GATEWAY = "10.77.0.1"  # only ever configured inside the namespaces the tests make


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread inside the network namespace at `path`."""
    outcome: dict[str, object] = {}

    def worker() -> None:
        try:
            with netns.entered(path):
                outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="dns-test-client")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


async def in_ns(path: str, fn: Callable[[], T]) -> T:
    # Off the event loop: the resolver under test runs on it.
    return await asyncio.to_thread(run_in_netns, path, fn)


async def query(path: str, qname: str, rdtype: str = "A", tcp: bool = False,
                timeout: float = 5.0) -> dns.message.Message:
    q = dns.message.make_query(qname, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return await in_ns(path, lambda: send(q, GATEWAY, timeout=timeout, port=53))


def ips(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def make_network_ns(path: str, gateway_cidr: str) -> None:
    """A namespace holding a bridge br0 with the gateway address, as an overlay network's."""
    netns.create_netns(path)
    with netns.entered(path):
        ipr = IPRoute()
    with ipr:
        ipr.link("add", ifname="br0", kind="bridge")
        index = ipr.link_lookup(ifname="br0")[0]
        address, prefixlen = gateway_cidr.split("/")
        ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen))
        ipr.link("set", index=index, state="up")


@pytest.fixture
def workdir() -> Iterator[str]:
    root = tempfile.mkdtemp(prefix=f"overnet-dns-{secrets.token_hex(3)}-")
    try:
        yield root
    finally:
        for name in os.listdir(root):
            netns.delete_netns(os.path.join(root, name))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def net_ns(workdir: str) -> str:
    path = os.path.join(workdir, "net-foobar")
    make_network_ns(path, f"{GATEWAY}/24")
    return path


def table() -> NameTable:
    return NameTable.build("foobar", "overnet", [
        Entry("web", "10.77.0.2", ("www",)), Entry("db", "10.77.0.3")], subnet="10.77.0.0/24")


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream({"example.test.": ["192.0.2.10"]}).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def server(net_ns: str, upstream: FakeUpstream) -> AsyncIterator[DnsServer]:
    srv = DnsServer(table, [upstream.address], timeout=1.0)
    await srv.start(GATEWAY, netns_path=net_ns)
    yield srv
    await srv.stop()


async def test_answers_inside_the_namespace_over_udp_and_tcp(
        server: DnsServer, net_ns: str) -> None:
    assert ips(await query(net_ns, "web.foobar.overnet")) == ["10.77.0.2"]
    assert ips(await query(net_ns, "WWW.foobar", tcp=True)) == ["10.77.0.2"]
    ptr = await query(net_ns, "3.0.77.10.in-addr.arpa", "PTR")
    assert [rd.to_text() for rd in ptr.answer[0]] == ["db.foobar.overnet."]
    assert (await query(net_ns, "gone.foobar.overnet")).rcode() == dns.rcode.NXDOMAIN
    assert (await query(net_ns, "9.0.77.10.in-addr.arpa", "PTR")).rcode() == dns.rcode.NXDOMAIN
    aaaa = await query(net_ns, "web", "AAAA", tcp=True)
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
    assert server.stats["answered"] == 4 and server.stats["nxdomain"] == 2


async def listening(path: str | None) -> str:
    cmd = ["ss", "-lntuH"] if path is None else ["nsenter", f"--net={path}", "ss", "-lntuH"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


async def test_listening_sockets_live_in_the_network_namespace(
        server: DnsServer, net_ns: str) -> None:
    inside = [line.split()[0] for line in (await listening(net_ns)).splitlines()
              if f"{GATEWAY}:53" in line]
    assert sorted(inside) == ["tcp", "udp"]
    assert f"{GATEWAY}:53" not in await listening(None)


async def test_forwarding_sockets_live_in_the_callers_namespace(
        server: DnsServer, net_ns: str, upstream: FakeUpstream) -> None:
    # The upstream listens on 127.0.0.1 of the root namespace only: reachable from the
    # resolver's forwarding sockets, not from the network namespace's own loopback.
    assert ips(await query(net_ns, "example.test")) == ["192.0.2.10"]
    assert ips(await query(net_ns, "example.test", tcp=True)) == ["192.0.2.10"]
    assert (await query(net_ns, "nothing.test")).rcode() == dns.rcode.NXDOMAIN
    assert upstream.received == 3 and server.stats["forwarded"] == 3


@pytest.fixture
def conf(workdir: str) -> str:
    path = os.path.join(workdir, "resolv.conf")
    with open(path, "w") as f:
        f.write(resolv_conf(GATEWAY, ["foobar.overnet"], ["ndots:1", "attempts:1"]))
    return path


async def test_glibc_resolves_through_the_generated_resolv_conf(
        server: DnsServer, net_ns: str, conf: str) -> None:
    # A private mount namespace shows the file as /etc/resolv.conf to getent only.
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec getent ahostsv4 "$@"'
    for name, want in (("web", "10.77.0.2"), ("db.foobar", "10.77.0.3"),
                       ("example.test", "192.0.2.10")):
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={net_ns}", "unshare", "-m", "sh", "-c", script, "sh", conf, name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, (name, err.decode())
        assert {line.split()[0] for line in out.decode().splitlines()} == {want}, name


async def test_dead_upstream_gives_servfail_within_the_timeout(net_ns: str) -> None:
    dead = await FakeUpstream({}, silent=True).start()
    srv = DnsServer(table, [dead.address], timeout=0.5)
    await srv.start(GATEWAY, netns_path=net_ns)
    try:
        # The client waits ten times the resolver's timeout: SERVFAIL must come first.
        response = await query(net_ns, "example.test", timeout=5.0)
        assert response.rcode() == dns.rcode.SERVFAIL and dead.received >= 1
        assert ips(await query(net_ns, "web")) == ["10.77.0.2"]
    finally:
        await srv.stop()
        await dead.stop()


def send_garbage(count: int, seed: int) -> None:
    rng = random.Random(seed)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(rng.randbytes(rng.randrange(0, 300)), (GATEWAY, 53))


async def test_random_bytes_flood_then_a_normal_query(server: DnsServer, net_ns: str) -> None:
    for batch in range(20):  # batches the kernel's receive buffer holds whole
        await in_ns(net_ns, lambda b=batch: send_garbage(25, seed=b))
        for _ in range(500):
            if server.stats["malformed"] >= 25 * (batch + 1):
                break
            await asyncio.sleep(0.01)
    assert server.stats["malformed"] == 500
    assert ips(await query(net_ns, "web")) == ["10.77.0.2"]
    assert ips(await query(net_ns, "web", tcp=True)) == ["10.77.0.2"]
    assert server.stats["errors"] == 0


@pytest.fixture
def two_nets(workdir: str) -> list[str]:
    paths = [os.path.join(workdir, f"net-{n}") for n in ("red", "blue")]
    for path in paths:
        make_network_ns(path, f"{GATEWAY}/24")
    return paths


async def test_one_loop_serves_two_networks_on_the_same_address(two_nets: list[str]) -> None:
    paths = two_nets
    tables = {
        "red": NameTable.build("red", "overnet", [Entry("web", "10.77.0.2")]),
        "blue": NameTable.build("blue", "overnet", [Entry("web", "10.77.0.3")]),
    }
    servers = []
    try:
        for path, name in zip(paths, tables):
            srv = DnsServer(lambda n=name: tables[n], [])
            servers.append(srv)
            await srv.start(GATEWAY, netns_path=path)
        assert ips(await query(paths[0], "web")) == ["10.77.0.2"]
        assert ips(await query(paths[1], "web", tcp=True)) == ["10.77.0.3"]
        assert (await query(paths[0], "web.blue.overnet")).rcode() == dns.rcode.NXDOMAIN
    finally:
        for srv in servers:
            await srv.stop()


async def test_resolvers_sync_every_network_of_the_host(two_nets: list[str]) -> None:
    red, blue = two_nets
    resolvers = Resolvers([])
    try:
        errors = await resolvers.sync({
            "red": ResolverSpec(GATEWAY, red, NameTable.build("red", "overnet", [
                Entry("web", "10.77.0.2")])),
            "blue": ResolverSpec(GATEWAY, blue, NameTable.build("blue", "overnet", [
                Entry("web", "10.77.0.3")])),
        })
        assert errors == {}
        assert ips(await query(red, "web.red")) == ["10.77.0.2"]
        assert ips(await query(blue, "web.blue", tcp=True)) == ["10.77.0.3"]
        await resolvers.sync({"red": ResolverSpec(GATEWAY, red, NameTable.build(
            "red", "overnet", [Entry("web", "10.77.0.4")]))})
        assert ips(await query(red, "web.red")) == ["10.77.0.4"]
        assert f"{GATEWAY}:53" not in await listening(blue)
    finally:
        await resolvers.close()
    assert f"{GATEWAY}:53" not in await listening(red)


async def test_start_failures_name_address_and_namespace(net_ns: str, workdir: str) -> None:
    srv = DnsServer(table, [])
    missing = os.path.join(workdir, "no-such-ns")
    with pytest.raises(OSError, match=f"{GATEWAY} port 53 in {missing}"):
        await srv.start(GATEWAY, netns_path=missing)
    with pytest.raises(OSError, match=f"10.77.0.9 port 53 in {net_ns}"):
        await srv.start("10.77.0.9", netns_path=net_ns)  # not an address of that namespace
    await srv.start(GATEWAY, netns_path=net_ns)
    try:
        other = DnsServer(table, [])
        with pytest.raises(OSError, match="in use"):
            await other.start(GATEWAY, netns_path=net_ns)
    finally:
        await srv.stop()
    assert f"{GATEWAY}:53" not in await listening(net_ns)  # stop closed both sockets
