"""`overnet doctor A B`: the path between two containers, hop by hop.

The CLI talks only to its own agent, and an agent reads only its own kernel. So each host's
half of the path is checked by that host's agent: the asking agent writes a request under
`doctor/<host>/<id>` in the store (with a short lease) and the other host's agent, which
watches the store anyway, answers under `doctor/<host>/<id>/answer` with its own findings.
No agent opens a port or trusts anything but the store it already trusts.

What proves the underlay carries VXLAN (UDP 4789) is the overlay ping itself: its packets can
only cross between the two hosts encapsulated on that port. When it fails although both
hosts hold the right state and ICMP between them passes, the port is what is blocked."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from ..agent.endpoints import attachment
from ..dataplane.model import VXLAN
from ..drivers.base import check_interface
from ..store import keys
from ..store.base import StoreError
from ..store.records import EndpointRecord
from .doctor import Finding, bad, check_overlay_devices, good
from .probe import VXLAN_OVERHEAD, Probes

PREFIX = keys.DOCTOR
ANSWER_WAIT = 6.0
PROBE_LISTEN = 3.0      # how long a host listens for the other's VXLAN probe frames
REQUEST_TTL = 30


def find(agent: Any, ref: str) -> list[EndpointRecord]:
    """Endpoint records of a container, by name, alias or (prefix of) ID, in every network."""
    out = []
    for net in agent.view.networks():
        for ep in agent.view.endpoints(net.id):
            if ref in (ep.name, ep.container, *ep.aliases) or \
                    (len(ref) >= 6 and ep.container.startswith(ref)):
                out.append(ep)
    return out


def pick(agent: Any, a_ref: str, b_ref: str) -> tuple[Any, Any, Any] | Finding:
    a, b = find(agent, a_ref), find(agent, b_ref)
    for ref, found in ((a_ref, a), (b_ref, b)):
        if not found:
            return bad(f"container {ref}", "no endpoint of that name or ID in the store",
                       "check the name with `overnet network inspect NETWORK`")
    for ea in a:
        for eb in b:
            if ea.network == eb.network:
                return ea, eb, agent.networks.get(ea.network)
    return bad("network", f"{a_ref} and {b_ref} share no network",
               "connect both to one network")


async def walk(agent: Any, a_ref: str, b_ref: str, probes: Probes | None = None
               ) -> list[Finding]:
    return [f async for f in steps(agent, a_ref, b_ref, probes) if isinstance(f, Finding)]


async def steps(agent: Any, a_ref: str, b_ref: str, probes: Probes | None = None
                ) -> AsyncIterator[Finding | str]:
    """The findings in path order as they are made, with progress messages (str) before
    the slow steps."""
    probes = probes or Probes()
    await agent.in_scope(*agent.view.networks())
    picked = pick(agent, a_ref, b_ref)
    if isinstance(picked, Finding):
        yield picked
        return
    a, b, net = picked
    seen = [good(f"{a_ref} and {b_ref}", f"network {net.name}: {a.ip} on {a.host}, {b.ip} "
                 f"on {b.host}")]
    yield seen[0]
    plan = [(a, b, a_ref), "underlay", (b, a, b_ref)] if a.host != b.host else \
        [(a, b, a_ref), (b, a, b_ref)]
    for stage in plan:
        if stage == "underlay":
            yield "probing the underlay (ICMP, then full-size packets with Don't Fragment)"
            found = await underlay(agent, net, a, b, probes)
        else:
            me, other, ref = stage
            if me.host != agent.name and me.host in agent.view.present(net.id):
                yield f"asking the agent of {me.host} for its half of the path"
            found = await side(agent, net, me, other, ref, probes)
        for f in found:
            seen.append(f)
            yield f
    yield "live probe: ping between the two containers"
    live = await live_probe(agent, a, b, a_ref, b_ref, probes)
    for f in live:
        seen.append(f)
        yield f
    direct = any(f.hop.startswith("VXLAN (UDP") for f in seen)
    if a.host != b.host and live and not direct:
        yield verdict(seen, live[0], a, b)


async def side(agent: Any, net: Any, me: Any, other: Any, ref: str,
               probes: Probes) -> list[Finding]:
    if me.host == agent.name:
        return await local_half(agent, net, me, other, ref)
    if me.host not in agent.view.present(net.id):
        return [bad(f"host {me.host}: agent", f"the agent of {me.host} is down (no "
                    f"present/{net.id[:12]}…/{me.host}): nothing there is checked or repaired",
                    f"start the agent on {me.host}")]
    return await ask(agent, me, other, net, ref, probes)


async def local_half(agent: Any, net: Any, me: Any, other: Any, ref: str) -> list[Finding]:
    """This host's hops for endpoint `me`: interface (a macvlan), network devices, and the
    entries that send traffic for `other` to its host."""
    where = f"{ref} on {me.host}"
    ep = agent.endpoints.find(me.container, me.ifname or "eth0")
    if ep is None:
        return [bad(f"{where}: endpoint", "the store has it but this agent does not",
                    "restart the agent (it re-publishes or removes its records)")]
    driver = agent.networks.driver(net)
    problems = await check_interface(agent.dp, attachment(ep), driver.mtu(net))
    out = [bad(f"{where}: {ep.ifname}", "; ".join(problems)) if problems else
           good(f"{where}: {ep.ifname}", f"{ep.ip}/{ep.prefixlen} mtu {ep.mtu}")]
    path = driver.namespace(net)
    if not path:
        return out
    out += [Finding(f"{me.host}: {f.hop}", f.ok, f.detail, f.fix)
            for f in await check_overlay_devices(agent, net, path)]
    if not out[-1].ok and "missing" in out[-1].detail:
        return out
    link = await agent.dp.link_info(ep.netns, ep.ifname)
    if link is not None and link.kind != "macvlan":
        out.append(bad(f"{where}: {ep.ifname}", f"a {link.kind or 'plain device'}, not a "
                       f"macvlan of the network's {VXLAN}"))
    if other.host != me.host:
        out.append(await entries(agent, path, me, other))
    return out


async def entries(agent: Any, path: str, me: Any, other: Any) -> Finding:
    hop = f"{me.host}: vxlan0 entries for {other.ip}"
    held = await agent.dp.peers(path)
    if (other.mac, other.ip, other.host_address) in held:
        return good(hop, f"{other.mac} via {other.host_address}")
    near = [f"{mac} {ip} via {vtep}" for mac, ip, vtep in held
            if ip == other.ip or mac == other.mac]
    detail = (f"holds {', '.join(near)}" if near else "no FDB + neighbour entry") + \
        f", should be {other.mac} {other.ip} via {other.host_address}"
    return bad(hop, detail)


async def underlay(agent: Any, net: Any, a: Any, b: Any, probes: Probes) -> list[Finding]:
    me, peer = (a, b) if a.host == agent.name else (b, a)
    if me.host != agent.name:
        return [good("underlay", "not checked from here (neither container is on "
                     f"{agent.name})")]
    hop = f"underlay {me.host_address} → {peer.host_address}"
    ok, why = await probes.ping_host(peer.host_address)
    if not ok:
        return [bad(hop, f"ICMP does not pass: {why}", "check routing and firewalls between "
                    "the hosts' underlay addresses")]
    out = [good(hop, "ICMP passes")]
    remote = agent.view.hosts(net.id).get(peer.host)
    mtu = agent.networks.driver(net).mtu(net) + VXLAN_OVERHEAD
    if remote is not None and remote.mtu and remote.mtu < mtu:
        out.append(bad(f"underlay MTU {me.host} ⇄ {peer.host}", f"{peer.host}'s underlay MTU "
                       f"is {remote.mtu}, the overlay needs {mtu}",
                       "give both hosts the same underlay MTU"))
        return out
    ok, why = await probes.ping_host(peer.host_address, mtu)
    out.append(good(f"underlay MTU {me.host} → {peer.host}", f"{mtu}-byte packets pass "
                    "unfragmented") if ok else
               bad(f"underlay MTU {me.host} → {peer.host}", f"{mtu}-byte packets with Don't "
                   f"Fragment do not pass ({why})", "raise the underlay MTU between the "
                   "hosts, or lower every host's (the overlay MTU follows it)"))
    return out


async def live_probe(agent: Any, a: Any, b: Any, a_ref: str, b_ref: str,
                     probes: Probes) -> list[Finding]:
    src, dst, s_ref, d_ref = (a, b, a_ref, b_ref) if a.host == agent.name else \
        (b, a, b_ref, a_ref)
    ep = agent.endpoints.find(src.container, src.ifname or "eth0")
    if src.host != agent.name or ep is None:
        return []
    ok, why = await probes.ping_from(ep.netns, dst.ip)
    hop = f"live probe: ping {s_ref} → {d_ref} ({dst.ip})"
    return [good(hop, why) if ok else bad(hop, why or "no reply", "see the hops above")]


def verdict(found: list[Finding], live: Finding, a: Any, b: Any) -> Finding:
    hop = f"VXLAN (UDP 4789) {a.host_address} ⇄ {b.host_address}"
    if live.ok:
        return good(hop, "the overlay ping crossed it both ways")
    others = [f for f in found if f is not live]
    if all(f.ok for f in others):
        return bad(hop, "blocked: both hosts hold the right state and ICMP passes between "
                   "them, yet encapsulated traffic does not", "allow UDP 4789 between the "
                   "hosts' underlay addresses (firewall, nftables, security group)")
    return Finding(hop, True, "not blamed: a hop above is wrong")


# --- the other host's half, through the store -----------------------------------------

async def ask(agent: Any, me: Any, other: Any, net: Any, ref: str,
              probes: Probes) -> list[Finding]:
    """The other host's half, from its agent; with VXLAN probes both ways when the other
    endpoint of the path is here (so this host has the network's vxlan0 to listen on)."""
    rid = secrets.token_hex(8)
    key = f"{PREFIX}{me.host}/{rid}"
    body: dict[str, Any] = {"net": net.id, "ip": me.ip, "other": other.ip, "ref": ref,
                            "from": agent.name}
    driver = agent.networks.driver(net)
    ns = driver.namespace(net) if other.host == agent.name and driver.publishes else None
    if ns:
        to_them, to_us = secrets.token_bytes(8), secrets.token_bytes(8)
        body["probe"] = {"to": to_them.hex(), "from": to_us.hex(), "vtep": agent.cfg.advertise,
                         "port": driver.port, "vni": net.vni}
    lease = await agent.store.grant(REQUEST_TTL)
    try:
        await agent.store.put(key, json.dumps(body).encode(), lease=lease.id)
        if not ns:
            answer = await _wait_for(agent, key + "/answer")
        else:
            answer, heard = await _probing(agent, key, me, body["probe"], to_them, to_us, ns,
                                           probes)
    finally:
        await agent.store.revoke(lease)
    if answer is None:
        return [bad(f"host {me.host}: its half", f"its agent gave no answer in "
                    f"{ANSWER_WAIT:.0f}s", f"run `overnet doctor` on {me.host}")]
    found = [Finding(**f) for f in answer]
    if ns and not isinstance(heard, str):
        found.append(probe_finding(body["probe"]["port"], me.host_address, agent.cfg.advertise,
                                   heard))
    return found


async def _probing(agent: Any, key: str, me: Any, probe: dict, to_them: bytes, to_us: bytes,
                   ns: str, probes: Probes) -> tuple[list[dict] | None, bool | str]:
    """Wait for the answer while sending our probe frames and listening for theirs."""
    sending = asyncio.create_task(probes.vxlan_send(me.host_address, probe["port"],
                                                    probe["vni"], to_them, ANSWER_WAIT))
    hearing = asyncio.create_task(probes.vxlan_heard(ns, to_us, PROBE_LISTEN))
    try:
        answer = await _wait_for(agent, key + "/answer")
        return answer, await hearing
    finally:
        for task in (sending, hearing):
            task.cancel()
        await asyncio.gather(sending, hearing, return_exceptions=True)


def probe_finding(port: int, src: str, dst: str, heard: bool) -> Finding:
    hop = f"VXLAN (UDP {port}) {src} → {dst}"
    if heard:
        return good(hop, "probe frames arrived on the network's vxlan0")
    return bad(hop, f"blocked: no probe frame from {src} arrived in {PROBE_LISTEN:.0f}s",
               f"allow UDP {port} from {src} to {dst} (firewall, nftables, security group)")


async def _wait_for(agent: Any, key: str) -> list[dict] | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ANSWER_WAIT
    while loop.time() < deadline:
        item = agent.mirror.items.get(key)
        if item is not None:
            try:
                return json.loads(item.value)
            except ValueError:
                return None
        await asyncio.sleep(0.05)
    return None


async def answer(agent: Any, key: str, value: bytes, probes: Probes | None = None) -> None:
    """Run this host's half of a request (and its probe exchange); put the findings under
    the request's lease."""
    try:
        kv = await agent.store.get(key)
        if kv is None:
            return          # the asker gave up already
        req = json.loads(value)
        net = agent.networks.get(req["net"])
        if net is not None:
            await agent.in_scope(net)
        eps = {e.ip: e for e in agent.view.endpoints(net.id)} if net else {}
        me, other = eps[req["ip"]], eps[req["other"]]
        found = await _answer_half(agent, net, me, other, req, probes or Probes())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        found = [bad(f"host {agent.name}", f"cannot check: {e!r}")]
    try:
        await agent.store.put(key + "/answer", json.dumps([f.to_json() for f in found])
                              .encode(), lease=kv.lease)
    except StoreError:
        pass                # the asker gave up (its lease is gone) or the store is down


async def _answer_half(agent: Any, net: Any, me: Any, other: Any, req: dict,
                       probes: Probes) -> list[Finding]:
    probe = req.get("probe")
    found = await local_half(agent, net, me, other, str(req["ref"]))
    ns = agent.networks.driver(net).namespace(net)
    if not probe or not ns:
        return found
    nonce, port = bytes.fromhex(probe["from"]), int(probe["port"])
    sending = asyncio.create_task(probes.vxlan_send(probe["vtep"], port, int(probe["vni"]),
                                                    nonce, PROBE_LISTEN))
    agent.observer.keep(sending)       # it goes on after we answer, for the asker to hear
    heard = await probes.vxlan_heard(ns, bytes.fromhex(probe["to"]), PROBE_LISTEN)
    if not isinstance(heard, str):
        found.append(probe_finding(port, probe["vtep"], agent.cfg.advertise, heard))
    return found
