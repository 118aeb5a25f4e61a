"""DNS resolver latency (p50/p99) and queries per second, measured from inside a namespace.

    sudo .venv/bin/python -m bench.dns_bench [--count N] [--total N] [--concurrency C]

The resolver runs as the agent runs it: listening on a network's gateway address inside a
network namespace made for the run (a bridge br0 with 10.77.0.1/24, nothing else), its
forwarding sockets in this process's namespace, where a second overnet resolver on 127.0.0.1
plays the upstream. The client is a separate process (`client` mode, entered into the
namespace with nsenter), so client and server do not share an interpreter lock. The same
client runs unchanged against another resolver, e.g. Docker's embedded DNS:

    nsenter --net=/proc/PID/ns/net .venv/bin/python -m bench.dns_bench client \\
        --server 127.0.0.11 --name web

Figures only, no assertions; everything the run makes is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time

import dns.message

GATEWAY = "10.77.0.1"
SCENARIOS = (  # (label, query name, transport)
    ("local A, UDP", "web.bench.overnet", "udp"),
    ("local A, TCP", "web.bench.overnet", "tcp"),
    ("NXDOMAIN, UDP", "missing.bench.overnet", "udp"),
    ("forwarded, UDP", "example.test", "udp"),
)


# -- client (runs inside the namespace) ----------------------------------------------------

def query_wire(qname: str, qid: int) -> bytes:
    query = dns.message.make_query(qname, "A")
    query.id = qid
    return query.to_wire()


def latencies(server: str, port: int, qname: str, count: int, tcp: bool) -> list[float]:
    """Seconds per query, one query at a time (lost or late queries are left out)."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    out: list[float] = []
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(2.0)
        sock.connect((server, port))
        for i in range(count):
            wire = query_wire(qname, i & 0xFFFF)
            start = time.perf_counter()
            try:
                if tcp:
                    sock.sendall(len(wire).to_bytes(2, "big") + wire)
                    size = int.from_bytes(_read(sock, 2), "big")
                    _read(sock, size)
                else:
                    sock.send(wire)
                    sock.recv(65535)
            except TimeoutError:
                continue
            out.append(time.perf_counter() - start)
    return out


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("resolver closed the connection")
        data += chunk
    return data


async def rate(server: str, port: int, qname: str, total: int, concurrency: int,
               budget: float = 20.0) -> tuple[float, int]:
    """(queries answered per second, queries lost) with `concurrency` UDP queries in flight.

    A query unanswered for half a second counts as lost and its window slot is refilled, so
    one lost datagram does not stall the measurement."""
    loop = asyncio.get_running_loop()
    wires = [query_wire(qname, i) for i in range(256)]
    counts = {"sent": 0, "received": 0, "lost": 0}
    last = [time.perf_counter()]

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            counts["received"] += 1
            last[0] = time.perf_counter()
            if counts["sent"] < total:
                send()

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(server, port))

    def send() -> None:
        transport.sendto(wires[counts["sent"] % len(wires)])
        counts["sent"] += 1

    start = time.perf_counter()
    for _ in range(min(concurrency, total)):
        send()
    seen = -1
    while counts["received"] + counts["lost"] < total and time.perf_counter() - start < budget:
        await asyncio.sleep(0.5)
        if counts["received"] == seen:  # no answer for half a second: the window is lost
            inflight = counts["sent"] - counts["received"] - counts["lost"]
            counts["lost"] += inflight
            for _ in range(min(inflight, total - counts["sent"])):
                send()
        seen = counts["received"]
    transport.close()
    return counts["received"] / (last[0] - start), counts["lost"]


def client_main(args: argparse.Namespace) -> None:
    lat = latencies(args.server, args.port, args.name, args.count, args.tcp)
    qps, lost = (asyncio.run(rate(args.server, args.port, args.name, args.total,
                                  args.concurrency)) if not args.tcp else (None, 0))
    json.dump({"latencies": lat, "qps": qps, "lost": lost, "count": args.count}, sys.stdout)


# -- server side (this process) ------------------------------------------------------------

def percentile(xs: list[float], q: float) -> float:
    data = sorted(xs)
    return data[min(len(data) - 1, round((len(data) - 1) * q / 100))]


async def run_client(ns: str, qname: str, transport: str, args: argparse.Namespace) -> dict:
    cmd = ["nsenter", f"--net={ns}", sys.executable, "-m", "bench.dns_bench", "client",
           "--server", GATEWAY, "--name", qname, "--count", str(args.count),
           "--total", str(args.total), "--concurrency", str(args.concurrency)]
    if transport == "tcp":
        cmd.append("--tcp")
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(__file__)))
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        raise RuntimeError(f"client for {qname} over {transport} failed")
    return json.loads(out)


def make_network_ns(path: str) -> None:
    from pyroute2 import IPRoute

    from overnet.dataplane import netns

    netns.create_netns(path)
    with netns.entered(path):
        ipr = IPRoute()
    with ipr:
        ipr.link("add", ifname="br0", kind="bridge")
        index = ipr.link_lookup(ifname="br0")[0]
        ipr.addr("add", index=index, address=GATEWAY, prefixlen=24)
        ipr.link("set", index=index, state="up")


async def measure(ns: str, args: argparse.Namespace) -> None:
    from overnet.dns import DnsServer, Entry, NameTable

    names = [Entry(f"c{i}", f"10.77.{i // 250}.{i % 250 + 2}") for i in range(args.names)]
    table = NameTable.build("bench", "overnet", [Entry("web", "10.77.0.200"), *names],
                            subnet="10.77.0.0/16")
    upstream_table = NameTable.build("up", "test", [Entry("example", "192.0.2.10")])
    upstream = DnsServer(lambda: upstream_table, [])
    _, upstream_port = await upstream.start("127.0.0.1", 0)
    server = DnsServer(lambda: table, [f"127.0.0.1:{upstream_port}"])
    await server.start(GATEWAY, 53, netns_path=ns)
    try:
        print(f"{'scenario':<16} {'p50 us':>8} {'p99 us':>8} {'answered':>9} {'qps':>8} "
              f"{'lost':>5}   (table of {args.names + 1} names)")
        for label, qname, transport in SCENARIOS:
            res = await run_client(ns, qname, transport, args)
            lat = [x * 1e6 for x in res["latencies"]]
            qps = f"{res['qps']:.0f}" if res["qps"] else "-"
            print(f"{label:<16} {percentile(lat, 50):>8.0f} {percentile(lat, 99):>8.0f} "
                  f"{len(lat):>5}/{res['count']:<3} {qps:>8} {res['lost']:>5}")
        print(f"resolver stats: {server.stats}")
    finally:
        await server.stop()
        await upstream.stop()


def server_main(args: argparse.Namespace) -> None:
    from overnet.dataplane import netns

    root = tempfile.mkdtemp(prefix=f"overnet-dnsbench-{secrets.token_hex(3)}-")
    ns = os.path.join(root, "net-bench")
    try:
        make_network_ns(ns)
        asyncio.run(measure(ns, args))
    finally:
        netns.delete_netns(ns)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dns_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=("server", "client"), default="server")
    parser.add_argument("--count", type=int, default=2000, help="sequential queries (latency)")
    parser.add_argument("--total", type=int, default=20000, help="queries for the rate")
    parser.add_argument("--concurrency", type=int, default=32, help="UDP queries in flight")
    parser.add_argument("--names", type=int, default=1000, help="names in the table")
    parser.add_argument("--server", default=GATEWAY, help="client: resolver address")
    parser.add_argument("--port", type=int, default=53, help="client: resolver port")
    parser.add_argument("--name", default="web.bench.overnet", help="client: name to ask")
    parser.add_argument("--tcp", action="store_true", help="client: latency over TCP")
    args = parser.parse_args(argv)
    if args.mode == "client":
        client_main(args)
    else:
        server_main(args)


if __name__ == "__main__":
    main()
