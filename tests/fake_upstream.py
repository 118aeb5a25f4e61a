"""A tiny upstream DNS server for tests of forwarding, on 127.0.0.1 with a random port.

Written independently of overnet.dns (only dnspython's message model), so tests of the
resolver do not check it against itself.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class FakeUpstream:
    records: dict[str, list[str]]  # lower-case name with trailing dot -> IPv4 addresses
    silent: bool = False  # never answer: a dead upstream
    received: int = 0
    port: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None
    _tcp_conns: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeUpstream:
        loop = asyncio.get_running_loop()
        for _ in range(16):  # the UDP port the kernel picked may be taken for TCP: pick again
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
                break
            except OSError:
                udp.close()
                tcp.close()
        else:
            raise OSError("no port free for both UDP and TCP on 127.0.0.1")
        self.port = udp.getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        tcp.listen(16)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        return self

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for writer in list(self._tcp_conns):
            writer.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    def respond(self, wire: bytes, max_size: int) -> bytes | None:
        self.received += 1
        if self.silent:
            return None
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query, recursion_available=True)
        question = query.question[0]
        ips = self.records.get(question.name.to_text().lower())
        if ips is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text_list(
                question.name, 60, dns.rdataclass.IN, dns.rdatatype.A, ips))
        return response.to_wire(max_size=max_size, prefer_truncation=True)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> None:
        self._tcp_conns.add(writer)
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = self.respond(await reader.readexactly(size), 65535)
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_conns.discard(writer)
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.upstream.respond(data, 512)
        if reply is not None and self.upstream._udp is not None:
            self.upstream._udp.sendto(reply, addr)
