"""One network's resolver: UDP and TCP on asyncio, answers from a `NameTable`, the rest forwarded.

The listening sockets are made inside the network's namespace (by a short-lived thread that
steps in, binds and steps out; a socket stays in the namespace it was made in), while the
forwarding sockets are made by the event loop's thread, in the agent's own namespace, where the
host's resolvers are reachable. One loop can so serve every network's resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode

from overnet.dataplane import netns
from overnet.dns.answer import encode, error_response, local_answer, parse_query, udp_limit
from overnet.dns.cache import ReplyCache
from overnet.dns.resolvconf import parse_upstream
from overnet.dns.table import NameTable

log = logging.getLogger(__name__)

RESULTS = ("answered", "nxdomain", "forwarded", "servfail", "malformed", "notimp", "dropped",
           "errors")
TCP_IDLE_TIMEOUT = 10.0  # seconds a TCP client may stay silent before we hang up
MAX_INFLIGHT = 1024  # forwarded queries waiting on upstreams; past that new ones are dropped


class DnsServer:
    """A resolver for one network. `table_provider` is called for every query: it must be cheap
    (return a table built in advance). `upstreams` are "ip", "ip:port" or "[ipv6]:port"."""

    def __init__(self, table_provider: Callable[[], NameTable], upstreams: list[str],
                 timeout: float = 2.0) -> None:
        if timeout <= 0:
            raise ValueError(f"bad DNS forwarding timeout {timeout!r}: must be > 0")
        self._table_provider = table_provider
        self._upstreams = [parse_upstream(u) for u in upstreams]
        self._timeout = timeout
        self.stats: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self._cache = ReplyCache()
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_closed: asyncio.Future[None] | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] | None = None  # where it listens, once started

    async def start(self, address: str, port: int = 53, netns_path: str | None = None
                    ) -> tuple[str, int]:
        """Listen on `address`:`port` (UDP and TCP; port 0 picks one) inside the namespace at
        `netns_path` (None: the caller's) and return (address, port). Raises OSError naming
        address, port and namespace."""
        if self._udp is not None:
            raise RuntimeError(f"DNS server already listening on {self.address}")
        udp, tcp = await _in_fresh_thread(lambda: _bind_sockets(address, port, netns_path))
        try:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), sock=udp)
            self._udp, self._udp_closed = transport, protocol.closed  # type: ignore[assignment]
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        except BaseException:
            udp.close()
            tcp.close()
            await self.stop()
            raise
        self.address = (address, udp.getsockname()[1])
        return self.address

    async def stop(self) -> None:
        """Close the sockets and end the queries in flight (idempotent)."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._udp_closed is not None:
            await self._udp_closed  # the transport closes its socket on the next loop turn
            self._udp_closed = None
        server, self._tcp = self._tcp, None
        if server is not None:
            server.close()
        # Open TCP connections and forwards in flight end before wait_closed, which (from
        # Python 3.12 on) waits for every connection.
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # -- answering ---------------------------------------------------------------------

    def _parse(self, wire: bytes) -> dns.message.Message | None:
        query = parse_query(wire)
        if query is None:
            self.stats["malformed"] += 1
        return query

    def _answer_now(self, wire: bytes, udp: bool
                    ) -> tuple[bytes | None, dns.message.Message | None]:
        """(reply, None) when the table decides the query, (None, query) when the query must be
        forwarded, (None, None) when it is dropped (malformed)."""
        try:
            table = self._table_provider()
        except Exception:
            log.exception("DNS table provider failed")
            self.stats["errors"] += 1
            return self._servfail(wire, udp), None
        max_size = 0 if udp else 65535  # 0: not yet known, the query's EDNS decides
        hit = self._cache.get(table, wire, max_size)
        if hit is not None:
            self.stats[hit[0]] += 1
            return hit[1], None
        query = self._parse(wire)
        if query is None:
            return None, None
        decided = local_answer(table, query)
        if decided is None:
            return None, query
        result, response = decided
        self.stats[result] += 1
        reply = encode(response, udp_limit(query) if udp else 65535)
        self._cache.put(table, wire, max_size, result, reply)
        return reply, None

    def _servfail(self, wire: bytes, udp: bool) -> bytes | None:
        query = self._parse(wire)
        if query is None:
            return None
        self.stats["servfail"] += 1
        return encode(error_response(query, dns.rcode.SERVFAIL),
                      udp_limit(query) if udp else 65535)

    async def _forward(self, query: dns.message.Message) -> dns.message.Message:
        """The first upstream answer within the timeout (shared out among the upstreams still
        to try), or SERVFAIL."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        for i, (host, port) in enumerate(self._upstreams):
            share = (deadline - loop.time()) / (len(self._upstreams) - i)
            if share <= 0:
                break
            try:
                response, _tcp = await asyncio.wait_for(dns.asyncquery.udp_with_fallback(
                    query, host, timeout=share, port=port, ignore_unexpected=True,
                    ignore_errors=True), share)
            except (TimeoutError, dns.exception.DNSException, OSError, EOFError) as exc:
                log.debug("upstream %s:%d failed for %s: %r", host, port,
                          query.question[0].name, exc)
                continue
            except Exception:  # a surprise from the library must not lose the client's answer
                self.stats["errors"] += 1
                log.exception("forwarding %s to %s:%d failed", query.question[0].name, host, port)
                continue
            self.stats["forwarded"] += 1
            return response
        self.stats["servfail"] += 1
        return error_response(query, dns.rcode.SERVFAIL)

    async def _forward_udp(self, query: dns.message.Message, client: tuple[str, int]) -> None:
        try:
            response = await self._forward(query)
            if self._udp is not None:
                self._udp.sendto(encode(response, udp_limit(query)), client)
        except Exception:  # nobody awaits this task: say what went wrong here
            self.stats["errors"] += 1
            log.exception("answering %s forwarded for %s failed", query.question[0].name, client)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transports --------------------------------------------------------------------

    def _datagram(self, data: bytes, client: tuple[str, int]) -> None:
        if self._udp is None:
            return
        reply, query = self._answer_now(data, udp=True)
        if reply is not None:
            self._udp.sendto(reply, client)
        elif query is None:
            return  # dropped
        elif len(self._tasks) >= MAX_INFLIGHT:
            self.stats["dropped"] += 1  # the client retries; better than unbounded tasks
        else:
            self._spawn(self._forward_udp(query, client))

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # so stop() ends open connections too
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                wire = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(header, "big")), TCP_IDLE_TIMEOUT)
                reply, query = self._answer_now(wire, udp=False)
                if reply is None:
                    if query is None:
                        break  # a stream that carried garbage is not trusted further
                    reply = encode(await self._forward(query))
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client went away or fell silent
        except Exception:
            self.stats["errors"] += 1
            log.exception("DNS over TCP failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._server._datagram(data, addr)
        except Exception:  # one bad query must never take the resolver down
            self._server.stats["errors"] += 1
            log.exception("DNS over UDP failed for a query from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP socket error: %r", exc)  # e.g. ICMP unreachable from a client


def _bind_sockets(address: str, port: int, netns_path: str | None
                  ) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a listening TCP socket on the same port, made in `netns_path`."""
    try:
        with netns.entered(netns_path) if netns_path else contextlib.nullcontext():
            return _bind(address, port)
    except OSError as exc:
        where = netns_path or "the agent's namespace"
        raise OSError(exc.errno, f"cannot listen for DNS on {address} port {port} in {where}: "
                                 f"{exc.strerror or exc}") from exc


def _bind(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    # With port 0 the kernel picks a free UDP port that may be taken for TCP: pick again.
    for _ in range(16 if port == 0 else 1):
        try:
            return _bind_pair(address, port)
        except OSError as exc:
            if port != 0 or exc.errno != errno.EADDRINUSE:
                raise
    return _bind_pair(address, port)


def _bind_pair(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Room for a burst while the loop is busy (the kernel caps it at net.core.rmem_max).
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        udp.bind((address, port))
        tcp.bind((address, udp.getsockname()[1]))  # port 0: TCP takes the port UDP got
        tcp.listen(128)
        udp.setblocking(False)
        tcp.setblocking(False)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


async def _in_fresh_thread(fn: Callable[[], tuple[socket.socket, socket.socket]]
                           ) -> tuple[socket.socket, socket.socket]:
    """Run `fn` on a thread of its own, so a namespace switch never touches a pooled thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[socket.socket, socket.socket]] = loop.create_future()

    def deliver(result: tuple[socket.socket, socket.socket] | None, exc: BaseException | None
                ) -> None:
        if future.cancelled():
            for sock in result or ():
                sock.close()  # the caller gave up: do not leak the sockets
        elif exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 -- handed to the awaiting caller
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    threading.Thread(target=run, name="overnet-dns-bind", daemon=True).start()
    return await future
