"""An agent's endpoint record -> the ADD result of the cniVersion the runtime asked for."""

from __future__ import annotations

from .spec import at_least


def add_result(endpoint: dict, ifname: str, netns: str, version: str) -> dict:
    """interfaces: [host-side veth, container side], or only the container side where the
    driver keeps no device on the host's side (an overlay network's macvlan); one IP on the
    container side; the agent's routes and DNS. Versions before 1.0.0 tag each IP with its
    family; 1.1.0 adds the MTU."""
    mtu = endpoint.get("mtu")
    with_mtu = at_least(version, "1.1.0") and isinstance(mtu, int) and mtu > 0
    host: dict = {"name": endpoint.get("host_ifname") or ""}
    container: dict = {"name": ifname, "mac": endpoint.get("mac", ""), "sandbox": netns}
    if not container["mac"]:
        del container["mac"]
    if with_mtu:
        host["mtu"] = container["mtu"] = mtu
    interfaces = [host, container] if host["name"] else [container]
    ip: dict = {"address": f"{endpoint['ip']}/{endpoint['prefixlen']}",
                "interface": len(interfaces) - 1}
    if endpoint.get("gateway"):
        ip["gateway"] = endpoint["gateway"]
    if not at_least(version, "1.0.0"):
        ip["version"] = "6" if ":" in endpoint["ip"] else "4"
    result = {"cniVersion": version, "interfaces": interfaces, "ips": [ip],
              "routes": [_route(r) for r in endpoint.get("routes") or []]}
    dns = _dns(endpoint.get("dns") or {})
    if dns:
        result["dns"] = dns
    return result


def _route(route: dict) -> dict:
    out = {"dst": route["dst"]}
    if route.get("gw"):
        out["gw"] = route["gw"]
    return out


def _dns(dns: dict) -> dict:
    out = {k: dns[k] for k in ("nameservers", "domain", "search", "options") if dns.get(k)}
    return out


def chain(prev: dict | None, ours: dict) -> dict:
    """A plugin given a prevResult outputs it with its own additions: our interfaces are
    appended and our IPs' interface indexes shifted past the ones already there."""
    if not prev:
        return ours
    merged = dict(prev)
    merged["cniVersion"] = ours["cniVersion"]
    shift = len(prev.get("interfaces") or [])
    merged["interfaces"] = list(prev.get("interfaces") or []) + ours["interfaces"]
    ips = [dict(ip, interface=ip["interface"] + shift) for ip in ours["ips"]]
    merged["ips"] = list(prev.get("ips") or []) + ips
    merged["routes"] = list(prev.get("routes") or []) + ours["routes"]
    if "dns" in ours and not prev.get("dns"):
        merged["dns"] = ours["dns"]
    return merged


def result_address(result: dict | None, ifname: str, netns: str) -> str | None:
    """The address a previous result gave `ifname` in `netns` (what CHECK compares)."""
    if not result:
        return None
    interfaces = result.get("interfaces") or []
    for ip in result.get("ips") or []:
        index = ip.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces):
            iface = interfaces[index]
            if iface.get("name") == ifname and iface.get("sandbox") == netns:
                return str(ip.get("address", "")).split("/")[0]
    return None
