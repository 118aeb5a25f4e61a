"""`overnet doctor`: what is wrong on this host, each finding with what to do about it.

It builds on the checks the agent's parts already have (EndpointService.check and the
drivers' check) and adds what they do not look at: the store, this host's records and leases,
the background loops, and the devices of each active network as a whole."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from ..dataplane.model import GATEWAY, VXLAN
from ..store import keys
from ..store.records import HostRecord, decode
from . import health

RESYNC_FIX = ("the agent repairs kernel drift at its next resync (--resync-every); if it "
              "stays, restart the agent and look at its log")


@dataclass
class Finding:
    hop: str           # what was checked: "store", "network foobar: vxlan0", ...
    ok: bool
    detail: str = ""   # why not (or what was seen)
    fix: str = ""      # what to do about it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def good(hop: str, detail: str = "") -> Finding:
    return Finding(hop, True, detail)


def bad(hop: str, detail: str, fix: str = RESYNC_FIX) -> Finding:
    return Finding(hop, False, detail, fix)


async def check_host(agent: Any) -> list[Finding]:
    out = await _store(agent)
    out += await _records(agent) if out[0].ok else []   # read from the store
    out += _loops(agent)
    for net in _active_networks(agent):
        out += await check_network(agent, net)
    if agent.hostsubnet is not None:
        out += await _host_subnet(agent)
    return out


async def _store(agent: Any) -> list[Finding]:
    why = await health.store_problem(agent)
    if why:
        return [bad("store", why, f"start etcd at {agent.cfg.store}, or check the network "
                    "between this host and it")]
    sync = health.sync_problem(agent)
    return [good("store", f"{agent.cfg.store} answers"),
            bad("store sync", sync, "wait for the watch to catch up; if it stays, restart "
                "the agent") if sync else good("store sync", "in sync")]


async def _records(agent: Any) -> list[Finding]:
    out = []
    get = lambda key: asyncio.wait_for(agent.store.get(key), health.STORE_PATIENCE)  # noqa
    kv = await get(keys.host(agent.name))
    mine = decode(HostRecord, kv.key, kv.value) if kv else None
    if mine is None:
        out.append(bad(f"hosts/{agent.name}", "this host has no host record",
                       "restart the agent: it writes its record on start"))
    elif mine.address != agent.cfg.advertise:
        out.append(bad(f"hosts/{agent.name}", f"the record says {mine.address}, this agent "
                       f"advertises {agent.cfg.advertise}",
                       "two agents share one --name: give each host its own"))
    else:
        out.append(good(f"hosts/{agent.name}", mine.address))
    if await get(keys.alive(agent.name)):
        out.append(good(f"alive/{agent.name}", "liveness lease held"))
    else:
        out.append(bad(f"alive/{agent.name}", "no liveness record: other hosts see this one "
                       "as down", "the agent re-registers once the store answers; check "
                       "the store"))
    for net in _active_networks(agent):
        if not agent.networks.driver(net).publishes:
            continue
        missing = [k for k in agent.membership.keys(net.id) if k not in agent.view.items]
        hop = f"host {agent.name} on network {net.name}"
        out.append(bad(hop, f"{', '.join(missing)} missing: the network's other hosts do not "
                       "program this host's containers", "the agent writes them on its "
                       "next pass of the network; check the store") if missing else
                   good(hop, "member, present"))
    return out


def _loops(agent: Any) -> list[Finding]:
    stopped = [n for n, up in agent.supervisor.running().items() if not up]
    failing = {n: e for n, e in agent.supervisor.last_error.items()}
    if stopped:
        return [bad("background loops", f"not running: {', '.join(sorted(stopped))}",
                    "restart the agent")]
    if failing:
        names = ", ".join(f"{n} ({agent.supervisor.restarts.get(n, 0)} restarts: {e})"
                          for n, e in sorted(failing.items()))
        return [Finding("background loops", True, f"running; restarted after errors: {names}")]
    return [good("background loops", f"{len(agent.supervisor.running())} running")]


def _active_networks(agent: Any) -> list[Any]:
    ids = {ep.network for ep in agent.endpoints.local.values()}
    return [n for i in sorted(ids) if (n := agent.networks.get(i)) is not None]


async def check_network(agent: Any, net: Any) -> list[Finding]:
    """A network with endpoints here: its devices, then each local endpoint (which also
    compares its FDB and neighbour entries with the remote endpoints in the store)."""
    driver = agent.networks.driver(net)
    out: list[Finding] = []
    path = driver.namespace(net)
    if path and driver.publishes:
        out += await check_overlay_devices(agent, net, path)
    for ep in agent.endpoints.on_network(net.id):
        hop = f"network {net.name}: {ep.ifname} of {ep.name or ep.container_id[:12]}"
        try:
            problems = await agent.endpoints.check(ep.container_id, ep.ifname)
        except Exception as e:   # noqa: BLE001 - a doctor reports, it does not fail
            problems = [f"cannot check: {e}"]
        out += [bad(hop, p) for p in problems] or [good(hop, f"{ep.ip} ({ep.runtime})")]
    return out


async def check_overlay_devices(agent: Any, net: Any, path: str) -> list[Finding]:
    """The network's own devices (vxlan0, gw0), as its driver says they should be."""
    driver = agent.networks.driver(net)
    if not await agent.dp.is_netns(path):
        return [bad(f"network {net.name}", f"its namespace {path} is missing")]
    try:
        problems = await driver.device_problems(net)
    except Exception as e:   # noqa: BLE001
        return [bad(f"network {net.name}", f"cannot read its devices: {e}")]
    mtu = driver.mtu(net)
    fine = {VXLAN: f"vni {net.vni}, port {driver.port}, mtu {mtu}",
            GATEWAY: f"{net.gateway}/{net.network.prefixlen} mtu {mtu}"}
    return [bad(f"network {net.name}: {dev}", "; ".join(found)) if found else
            good(f"network {net.name}: {dev}", fine[dev]) for dev, found in problems.items()]


async def _host_subnet(agent: Any) -> list[Finding]:
    hs = agent.hostsubnet
    out = []
    if hs.manager is not None and hs.mirror is not None:
        if hs.manager.key in hs.mirror.items:
            out.append(good("subnet lease", f"{hs.subnet} ({hs.manager.key})"))
        else:
            out.append(bad("subnet lease", f"{hs.manager.key} is missing from the store",
                           "the agent re-creates it at its next reconcile"))
    if hs.backend is not None and hs.manager is not None and hs.manager.lease is not None:
        out += await _subnet_routes(agent.dp, hs)
    if hs.masq is not None:
        try:
            present = await hs.masq.present()
        except Exception as e:   # noqa: BLE001
            present, why = False, str(e)
        else:
            why = "the masquerade rules are missing or changed"
        out.append(good("masquerade", "rules in place") if present else
                   bad("masquerade", why, "the agent restores them within seconds"))
    return out


async def _subnet_routes(dp: Any, hs: Any) -> list[Finding]:
    """One route (and for vxlan one neighbour + FDB entry) per other host's subnet lease."""
    remote = hs.backend._remote(hs.lease, hs.leases())
    device = getattr(hs.backend, "device", None)
    try:
        if device:
            routes, neigh, fdb = await dp.vxlan_peers(device)
        else:
            gw = {(r.subnet, r.gateway) for r in await dp.gw_routes()}
    except Exception as e:   # noqa: BLE001
        return [bad("host subnet routes", f"cannot read them: {e}")]
    out = []
    for lease in remote:
        subnet, ip = str(lease.subnet), lease.attrs.public_ip
        if device:
            gateway, mac = str(lease.subnet.network_address), lease.attrs.vtep_mac
            missing = [what for what, there in (
                ("route", subnet in routes), ("neighbour", neigh.get(gateway) == mac),
                ("FDB entry", fdb.get(mac) == ip)) if not there]
        else:
            missing = [] if (subnet, ip) in gw else ["route"]
        hop = f"host subnet {subnet} (via {ip})"
        out.append(bad(hop, f"{', '.join(missing)} missing on "
                       f"{device or 'the underlay device'}") if missing else good(hop))
    return out or [good("host subnet routes", "no other host holds a lease")]


def endpoint_key(net_id: str, ip: str) -> str:
    return keys.endpoint(net_id, ip)
