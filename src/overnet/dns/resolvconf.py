"""resolv.conf both ways: the file a container gets, and the host's upstream resolvers."""

from __future__ import annotations

import ipaddress

DEFAULT_PORT = 53


def resolv_conf(nameserver: str, search: list[str], options: list[str]) -> str:
    """A container's /etc/resolv.conf pointing at the network's resolver."""
    lines = [f"nameserver {nameserver}\n"]
    if search:
        lines.append("search " + " ".join(search) + "\n")
    if options:
        lines.append("options " + " ".join(options) + "\n")
    return "".join(lines)


def upstreams_from_resolv_conf(text: str) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, in order, duplicates dropped.

    Loopback stub resolvers (127.0.0.53) are kept: the forwarding sockets live in the agent's
    namespace, where such a stub is reachable. An IPv6 link-local zone (`%eth0`) is kept too.
    Lines that are not a valid address are ignored, as the C library does.
    """
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            ipaddress.ip_address(fields[1].split("%", 1)[0])
        except ValueError:
            continue
        if fields[1] not in found:
            found.append(fields[1])
    return found


def parse_upstream(value: str) -> tuple[str, int]:
    """`ip`, `ip:port`, `v6` or `[v6]:port` -> (ip, port); ValueError naming a bad value."""
    host, port = value, DEFAULT_PORT
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad upstream resolver {value!r}: want ip, ip:port or [ipv6]:port")
        port = _port(value, rest[1:]) if rest else DEFAULT_PORT
    elif value.count(":") == 1:
        host, _, rest = value.partition(":")
        port = _port(value, rest)
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(
            f"bad upstream resolver {value!r}: want ip, ip:port or [ipv6]:port") from None
    return host, port


def _port(value: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in upstream resolver {value!r}")
    return int(text)


def host_upstreams(path: str = "/etc/resolv.conf") -> list[str]:
    """The upstream resolvers of the host's resolv.conf (none if the file is missing)."""
    try:
        with open(path) as f:
            return upstreams_from_resolv_conf(f.read())
    except FileNotFoundError:
        return []
