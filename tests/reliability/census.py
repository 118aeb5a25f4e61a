"""A leak census of a lab: what every host's kernel and the store hold, checked against what
the agents say they run. Every finding is one line naming the host and the thing."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess

from overnet.runtime.identity import pids_in_netns
from tests.labfixture import LabForTests

ROOT = "/overnet/v1/"


def etcdctl(lab: LabForTests, *args: str) -> subprocess.CompletedProcess:
    url = lab.state.store_url.split(",")[0].replace("etcd://", "http://")
    return lab.run(lab.state.store.name, ["etcdctl", "--endpoints", url, *args])


def store_items(lab: LabForTests, prefix: str = ROOT) -> dict[str, dict]:
    """Every record under `prefix`, parsed (values that are not JSON objects kept raw)."""
    out = etcdctl(lab, "get", "--prefix", prefix, "-w", "json").stdout
    kvs = json.loads(out).get("kvs", [])
    items = {}
    for kv in kvs:
        key = base64.b64decode(kv["key"]).decode()
        raw = base64.b64decode(kv.get("value", "")).decode(errors="replace")
        try:
            items[key] = json.loads(raw)
        except ValueError:
            items[key] = {"raw": raw}
    return items


def _containers(lab: LabForTests, host: str) -> list[dict]:
    return lab.client(host).get("/containers", all="1")


def container_link(lab: LabForTests, host: str, cid: str, ifname: str = "eth0") -> str:
    """`ip -d link show` of a container's interface ("" if it has none)."""
    netns_dir = os.path.join(lab.host(host).run_dir, "overnet", "netns")
    return lab.sh(host, "nsenter", f"--net={os.path.join(netns_dir, cid[:12])}", "ip", "-o",
                  "-d", "link", "show", ifname).stdout


def census(lab: LabForTests) -> list[str]:
    """Everything left behind or out of step, as lines; [] when the lab is clean."""
    problems: list[str] = []
    items = store_items(lab)
    endpoints = {k: v for k, v in items.items() if k.startswith(ROOT + "endpoints/")}
    blocks = {k: v for k, v in items.items() if k.startswith(ROOT + "blocks/")}
    ips: dict[tuple[str, str], str] = {}
    for key, ep in endpoints.items():
        where = (ep.get("network", "?"), ep.get("ip", "?"))
        if where in ips:
            problems.append(f"address {where[1]} held twice: {ips[where]} and {key}")
        ips[where] = key
    for host in [h.name for h in lab.state.hosts]:
        problems += _host_census(lab, host, endpoints, blocks)
    return problems


def _host_census(lab: LabForTests, host: str, endpoints: dict, blocks: dict) -> list[str]:
    problems: list[str] = []
    h = lab.host(host)
    cs = _containers(lab, host)
    running = [c for c in cs if c["State"]["Running"]]
    mine = {k: v for k, v in endpoints.items() if v.get("host") == host}
    with_ip = {c["Id"]: c for c in cs if c["NetworkSettings"]["IPAddress"]}
    recorded = {v["container"] for v in mine.values()}
    for cid in set(with_ip) - recorded:
        if with_ip[cid]["NetworkSettings"]["Networks"] and with_ip[cid]["State"]["Running"]:
            drv = next(iter(with_ip[cid]["NetworkSettings"]["Networks"].values()))["driver"]
            if drv == "overlay":
                problems.append(f"{host}: container {cid[:12]} has an address but no record")
    for key, v in mine.items():
        if v["container"] not in {c["Id"] for c in running}:
            problems.append(f"{host}: record {key} has no running container behind it")
    # namespaces: every file in the netns dir is a container's or a network's in use
    netns_dir = os.path.join(h.run_dir, "overnet", "netns")
    files = set(os.listdir(netns_dir)) if os.path.isdir(netns_dir) else set()
    wanted = {c["Id"][:12] for c in cs if c["NetworkSettings"]["SandboxKey"]}
    wanted |= {v["network"][:12] for v in mine.values()}
    for extra in sorted(files - wanted):
        problems.append(f"{host}: namespace {extra} left in {netns_dir}")
    # processes in a namespace no container owns
    for name in files - wanted:
        for pid in pids_in_netns(os.path.join(netns_dir, name)):
            problems.append(f"{host}: process {pid} runs in unowned namespace {name}")
    # devices: each network namespace holds its vxlan0 and gw0, nothing else; each running
    # container's interface on an overlay network is a macvlan with its endpoint's MAC
    for net12 in {v["network"][:12] for v in mine.values()}:
        out = lab.sh(host, "nsenter", f"--net={os.path.join(netns_dir, net12)}", "ip", "-o",
                     "link", "show").stdout
        have = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
        for extra in sorted(have - {"lo", "vxlan0", "gw0"}):
            problems.append(f"{host}: device {extra} in network {net12} belongs to nothing")
        for missing in sorted({"vxlan0", "gw0"} - have):
            problems.append(f"{host}: {missing} of network {net12} is gone")
    for c in running:
        for name, n in c["NetworkSettings"]["Networks"].items():
            if n["driver"] == "overlay" and n["mac"]:
                eth0 = container_link(lab, host, c["Id"])
                if "macvlan" not in eth0 or n["mac"] not in eth0:
                    problems.append(f"{host}: container {c['Id'][:12]} has no macvlan with "
                                    f"{n['mac']} on network {name}: {eth0.strip()!r}")
    problems += _peer_census(lab, host, endpoints, netns_dir, mine)
    problems += _block_census(host, mine, blocks)
    return problems


def _peer_census(lab: LabForTests, host: str, endpoints: dict, netns_dir: str,
                 mine: dict) -> list[str]:
    """Each network with local endpoints holds a neighbour entry for every remote endpoint
    and none for anything else."""
    problems = []
    for net_id in {v["network"] for v in mine.values()}:
        path = os.path.join(netns_dir, net_id[:12])
        out = lab.sh(host, "nsenter", f"--net={path}", "ip", "neigh", "show", "dev", "vxlan0",
                     "nud", "permanent").stdout
        have = {line.split()[0] for line in out.splitlines() if line.strip()}
        want = {v["ip"] for v in endpoints.values()
                if v.get("network") == net_id and v.get("host") != host}
        for extra in sorted(have - want):
            problems.append(f"{host}: neighbour {extra} in network {net_id[:12]} is stale")
        for missing in sorted(want - have):
            problems.append(f"{host}: neighbour {missing} in network {net_id[:12]} missing")
    return problems


def _block_census(host: str, mine: dict, blocks: dict) -> list[str]:
    problems = []
    owned = [(k.rsplit("/", 2)[1], k.rsplit("/", 1)[1]) for k, v in blocks.items()
             if v.get("host") == host]
    nets = {(net, ipaddress.IPv4Network(cidr.replace("-", "/"))) for net, cidr in owned}
    for key, v in mine.items():
        ip = ipaddress.IPv4Address(v["ip"])
        if not any(n == v["network"] and ip in b for n, b in nets):
            problems.append(f"{host}: endpoint {v['ip']} is in no block of {host}")
    return problems
