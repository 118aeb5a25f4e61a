"""Answers built from a `NameTable`, in dnspython's message model (pure, no sockets).

`local_answer` decides per query: answer from the table, NXDOMAIN, or None (forward upstream).
"""

from __future__ import annotations

import functools
import ipaddress

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from overnet.dns.table import NameTable

# Containers come and go; a stale cached address is worse than one more local round trip.
TTL = 0
# Without EDNS a UDP answer is limited to 512 bytes (RFC 1035 4.2.1).
CLASSIC_UDP_LIMIT = 512
_REVERSE_ZONES = (dns.name.from_text("in-addr.arpa."), dns.name.from_text("ip6.arpa."))
_LOCAL_CLASSES = (dns.rdataclass.IN, dns.rdataclass.ANY)


def parse_query(wire: bytes) -> dns.message.Message | None:
    """The query in `wire`, or None if it is malformed: unparseable, a response rather than a
    query, or not exactly one question (a standard query has one; RFC 9619)."""
    try:
        msg = dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 -- dnspython raises many types for bad wire data
        return None
    if msg.flags & dns.flags.QR or len(msg.question) != 1:
        return None
    return msg


def local_answer(table: NameTable, query: dns.message.Message
                 ) -> tuple[str, dns.message.Message] | None:
    """(result, response) when the table decides the query, None when it must be forwarded.

    result is one of "answered", "nxdomain" or "notimp" (opcodes other than QUERY).
    """
    if query.opcode() != dns.opcode.QUERY:
        return "notimp", error_response(query, dns.rcode.NOTIMP)
    question = query.question[0]
    if question.rdclass not in _LOCAL_CLASSES:
        return None
    name = question.name
    if name.is_subdomain(_REVERSE_ZONES[0]) or name.is_subdomain(_REVERSE_ZONES[1]):
        return _reverse_answer(table, query)
    return _forward_answer(table, query)


def _forward_answer(table: NameTable, query: dns.message.Message
                    ) -> tuple[str, dns.message.Message] | None:
    question = query.question[0]
    text = question.name.to_text()
    ips = table.addresses(text)
    if ips is None:
        if table.is_parent(text):
            return "answered", _response(query)  # no data, but the name exists
        if table.in_domain(text):
            return "nxdomain", _response(query, dns.rcode.NXDOMAIN)
        return None
    response = _response(query)
    for rdtype, family in ((dns.rdatatype.A, 4), (dns.rdatatype.AAAA, 6)):
        if question.rdtype not in (rdtype, dns.rdatatype.ANY):
            continue
        matching = [_rdata(rdtype, ip) for ip in ips if _version(ip) == family]
        if matching:
            response.answer.append(dns.rrset.from_rdata_list(question.name, TTL, matching))
    return "answered", response


def _reverse_answer(table: NameTable, query: dns.message.Message
                    ) -> tuple[str, dns.message.Message] | None:
    question = query.question[0]
    try:
        ip = dns.reversename.to_address(question.name)
    except (dns.exception.SyntaxError, ValueError):
        return None  # a partial reverse name (a zone cut): the upstream's business
    canonical = table.ptr(ip)
    if canonical is None:
        if table.owns_address(ip):
            return "nxdomain", _response(query, dns.rcode.NXDOMAIN)
        return None
    response = _response(query)
    if question.rdtype in (dns.rdatatype.PTR, dns.rdatatype.ANY):
        response.answer.append(dns.rrset.from_rdata_list(
            question.name, TTL, [_rdata(dns.rdatatype.PTR, canonical + ".")]))
    return "answered", response


# Parsing record text is most of the cost of an answer; rdata are immutable, so each address
# and name is parsed once (the cache holds far more than one network's names).
@functools.lru_cache(maxsize=16384)
def _rdata(rdtype: dns.rdatatype.RdataType, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)


@functools.lru_cache(maxsize=16384)
def _version(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def _response(query: dns.message.Message, rcode: dns.rcode.Rcode = dns.rcode.NOERROR
              ) -> dns.message.Message:
    # Authoritative for the cluster's names; recursion available through the upstreams.
    response = dns.message.make_response(query, recursion_available=True)
    response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    return response


def error_response(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    """An empty response with `rcode` (SERVFAIL when no upstream answered, NOTIMP ...)."""
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(rcode)
    return response


def udp_limit(query: dns.message.Message) -> int:
    """The largest UDP answer the client accepts: its EDNS payload size, else 512 bytes."""
    return max(query.payload, CLASSIC_UDP_LIMIT) if query.edns >= 0 else CLASSIC_UDP_LIMIT


def encode(response: dns.message.Message, max_size: int = 65535) -> bytes:
    """Wire format no longer than `max_size`: what does not fit is cut and the TC bit set, so a
    UDP client retries over TCP (RFC 7766)."""
    return response.to_wire(max_size=max_size, prefer_truncation=True)

