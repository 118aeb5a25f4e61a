#!/usr/bin/env python3
"""Reachability prober, run inside a container's namespaces (standard library only).

Line protocol on stdin/stdout, one trial at a time:

    arm IP NAME       forget the neighbour cache, wait until IP does not answer and NAME is
                      not resolvable, then answer `armed T` and start probing at once:
                      an ICMP echo to IP and a look-up of NAME every --interval; when both
                      succeeded (or --timeout passed) answer
                      `result {"ping": T, "name": T, "name_ip": "...", "sent": N}`
    quit

T are CLOCK_MONOTONIC seconds (time.monotonic), which every namespace shares, so the caller
compares them with its own clock. `ping` is when the first echo reply arrived, `name` when
the first look-up found NAME. The look-up is /etc/hosts re-read (--lookup hosts, overnet) or
a DNS query (--lookup dns:SERVER, Docker's embedded DNS at 127.0.0.11).

Arming also lowers the neighbour retransmit time of every interface to --arp-ms: a probe sent
before the network is ready leaves an INCOMPLETE neighbour entry that the kernel re-tries
only every second by default, which would hide when the network became ready.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = struct.pack("!d", time.monotonic()) + b"overnet-bench-probe"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload


def parse_echo_reply(packet: bytes, ident: int) -> int | None:
    """Sequence number of an echo reply for us in a raw IPv4 packet, else None."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:ihl + 8]
    if len(icmp) < 8:
        return None
    typ, _code, _ck, rid, seq = struct.unpack("!BBHHH", icmp)
    return seq if typ == 0 and rid == ident else None


def dns_query(qid: int, name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def dns_answer(packet: bytes) -> tuple[int, str | None]:
    """(query id, first A record or None) of a DNS response."""
    if len(packet) < 12:
        return -1, None
    qid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", packet[:12])
    if flags & 0x000F or an == 0:
        return qid, None
    pos = 12
    for _ in range(qd):
        pos = _skip_name(packet, pos) + 4
    for _ in range(an):
        pos = _skip_name(packet, pos)
        if pos + 10 > len(packet):
            break
        typ, _cls, _ttl, rdlen = struct.unpack("!HHIH", packet[pos:pos + 10])
        pos += 10
        if typ == 1 and rdlen == 4:
            return qid, socket.inet_ntoa(packet[pos:pos + 4])
        pos += rdlen
    return qid, None


def _skip_name(packet: bytes, pos: int) -> int:
    while pos < len(packet):
        n = packet[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += n + 1
    return pos


def hosts_lookup(name: str, path: str = "/etc/hosts") -> str | None:
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and name in words[1:]:
            return words[0]
    return None


class Prober:
    def __init__(self, lookup: str, interval: float, timeout: float, arp_ms: int) -> None:
        self.interval = interval
        self.timeout = timeout
        self.arp_ms = arp_ms
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0
        self.icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.icmp.setblocking(False)
        self.dns_server = None
        self.dns = None
        if lookup.startswith("dns:"):
            self.dns_server = (lookup[4:], 53)
            self.dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.dns.setblocking(False)
        self.qid = random.randrange(1 << 16)

    # one probe round: send what is still missing, then collect answers until `until`
    def _send(self, ip: str, name: str, want_ping: bool, want_name: bool) -> str | None:
        found = None
        if want_ping:
            self.seq = (self.seq + 1) & 0xFFFF
            try:
                self.icmp.sendto(echo_request(self.ident, self.seq), (ip, 0))
            except OSError:
                pass   # no route or no neighbour yet: that is what we are waiting for
        if want_name:
            if self.dns is not None:
                self.qid = (self.qid + 1) & 0xFFFF
                try:
                    self.dns.sendto(dns_query(self.qid, name), self.dns_server)
                except OSError:
                    pass
            else:
                found = hosts_lookup(name)
        return found

    def _collect(self, until: float) -> tuple[float | None, str | None]:
        """Wait for answers until `until`: (time of an echo reply, DNS address found)."""
        socks = [self.icmp] + ([self.dns] if self.dns is not None else [])
        ping_t, name_ip = None, None
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return ping_t, name_ip
            ready, _, _ = select.select(socks, [], [], left)
            now = time.monotonic()
            for s in ready:
                while True:
                    try:
                        data = s.recv(2048)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    if s is self.icmp:
                        if parse_echo_reply(data, self.ident) is not None and ping_t is None:
                            ping_t = now
                    else:
                        _, addr = dns_answer(data)
                        if addr and name_ip is None:
                            name_ip = addr
            if ping_t is not None or name_ip is not None:
                return ping_t, name_ip

    def forget_neighbours(self) -> None:
        base = "/proc/sys/net/ipv4/neigh"
        for iface in os.listdir(base):
            if iface in ("default", "lo"):
                continue
            try:
                with open(os.path.join(base, iface, "retrans_time_ms"), "w") as f:
                    f.write(str(self.arp_ms))
            except OSError:
                pass
        subprocess.run(["ip", "neigh", "flush", "all"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def arm(self, ip: str, name: str, quiet: float = 0.06, limit: float = 20.0) -> bool:
        """Wait until neither the address answers nor the name resolves for `quiet` s."""
        self.forget_neighbours()
        deadline = time.monotonic() + limit
        clear_since = time.monotonic()
        while time.monotonic() < deadline:
            t = time.monotonic()
            hosts_ip = self._send(ip, name, True, True)
            ping_t, dns_ip = self._collect(t + self.interval * 2)
            if hosts_ip or dns_ip or ping_t:
                clear_since = time.monotonic()
                if ping_t:
                    self.forget_neighbours()
            elif time.monotonic() - clear_since >= quiet:
                return True
        return False

    def probe(self, ip: str, name: str) -> dict:
        start = time.monotonic()
        deadline = start + self.timeout
        res = {"ping": None, "name": None, "name_ip": None, "sent": 0}
        tick = start
        while time.monotonic() < deadline and (res["ping"] is None or res["name"] is None):
            hosts_ip = self._send(ip, name, res["ping"] is None, res["name"] is None)
            res["sent"] += 1
            if hosts_ip and res["name"] is None:
                res["name"], res["name_ip"] = time.monotonic(), hosts_ip
            tick += self.interval
            if tick < time.monotonic():
                tick = time.monotonic()
            while True:
                ping_t, dns_ip = self._collect(tick)
                if ping_t and res["ping"] is None:
                    res["ping"] = ping_t
                if dns_ip and res["name"] is None:
                    res["name"], res["name_ip"] = time.monotonic(), dns_ip
                if time.monotonic() >= tick:
                    break
        return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lookup", default="hosts", help="hosts, or dns:SERVER")
    ap.add_argument("--interval", type=float, default=0.002)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--arp-ms", type=int, default=2)
    args = ap.parse_args()
    p = Prober(args.lookup, args.interval, args.timeout, args.arp_ms)
    print("ready", time.monotonic(), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "arm" and len(words) == 3:
            ip, name = words[1], words[2]
            if not p.arm(ip, name):
                print("error", json.dumps("address or name still answering after 20 s"),
                      flush=True)
                continue
            print("armed", time.monotonic(), flush=True)
            print("result", json.dumps(p.probe(ip, name)), flush=True)
        else:
            print("error", json.dumps(f"unknown command {line.strip()!r}"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
