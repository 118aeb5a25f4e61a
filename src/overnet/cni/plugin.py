"""The verbs of the `overnet-cni` type: each one or two requests to the local agent."""

from __future__ import annotations

import sys

from . import pending
from .agent import ApiError, Client, connect, endpoint_path, ref, to_cni_error, transient
from .config import OvernetConf, valid_attachments
from .env import Invocation
from .result import add_result, chain, result_address
from .spec import INTERNAL, NOT_AVAILABLE, TRY_AGAIN_LATER, UNKNOWN_CONTAINER, CniError, require

RUNTIME = "cni"
_LABEL = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def run(inv: Invocation, raw: dict, client: Client | None = None) -> dict | None:
    conf = OvernetConf(raw)
    if inv.command == "CHECK":
        require(conf.version, "0.4.0", "CHECK")
    elif inv.command in ("GC", "STATUS"):
        require(conf.version, "1.1.0", inv.command)
    client = client or connect(conf.socket)
    if inv.command == "STATUS":
        return cmd_status(client, conf)
    flush(client, conf)
    if inv.command == "ADD":
        return cmd_add(client, inv, conf)
    if inv.command == "DEL":
        return cmd_del(client, inv, conf)
    if inv.command == "CHECK":
        return cmd_check(client, inv, conf)
    return cmd_gc(client, conf, valid_attachments(raw))


def flush(client: Client, conf: OvernetConf) -> None:
    """Finish DELs left while the agent was away before anything else reaches it (an ADD may
    reuse what such a DEL releases)."""
    try:
        pending.flush_pending(client, conf.pending_dir)
    except OSError as e:
        print(f"overnet-cni: cannot read pending DELs in {conf.pending_dir}: {e}", file=sys.stderr)


def cmd_add(client: Client, inv: Invocation, conf: OvernetConf) -> dict:
    try:
        endpoint = client.post("/endpoints", attach_request(inv, conf))
    except ApiError as e:
        raise add_error(inv, conf, e) from None
    return add_answer(inv, conf, endpoint)


def add_error(inv: Invocation, conf: OvernetConf, e: ApiError) -> CniError:
    return to_cni_error(e, f"attaching container {inv.container_id} ({inv.ifname}) to "
                        f"network {conf.network}")


def add_answer(inv: Invocation, conf: OvernetConf, endpoint: dict) -> dict:
    """The agent's endpoint record as the ADD result, chained after the previous one."""
    return chain(conf.prev_result, add_result(endpoint, inv.ifname, inv.netns, conf.version))


def attach_request(inv: Invocation, conf: OvernetConf) -> dict:
    """The POST /endpoints body: addresses asked for through CNI_ARGS (IP, MAC) or the runtime
    capabilities (ips, mac, aliases) are passed on; the name comes from the pod or container."""
    body: dict = {"network": conf.network, "container_id": inv.container_id,
                  "netns": inv.netns, "ifname": inv.ifname, "runtime": RUNTIME,
                  "name": dns_label(inv.args.get("K8S_POD_NAME", ""))
                  or dns_label(inv.container_id[:12])}
    rc = conf.runtime_config
    ips = [str(ip).split("/")[0] for ip in rc.get("ips") or [] if ":" not in str(ip)]
    ip = inv.args.get("IP") or (ips[0] if ips else "")
    if ip:
        body["ip"] = ip
    mac = inv.args.get("MAC") or rc.get("mac")
    if mac:
        body["mac"] = mac
    aliases = (rc.get("aliases") or {}).get(conf.name) if isinstance(rc.get("aliases"), dict) \
        else None
    if aliases:
        body["aliases"] = [a for a in (dns_label(str(x)) for x in aliases) if a]
    return body


def dns_label(value: str) -> str:
    """A runtime's container name as a DNS label: Podman allows "My_App", DNS wants "my-app"."""
    label = "".join(c if c in _LABEL else "-" for c in value.lower()).strip("-")
    return label[:63].rstrip("-")


def cmd_del(client: Client, inv: Invocation, conf: OvernetConf) -> None:
    """Best effort and idempotent: gone is fine; an absent agent gets the DEL later."""
    try:
        client.delete(endpoint_path(inv.container_id, inv.ifname))
    except ApiError as e:
        if e.status == 404:
            return
        if not transient(e):
            raise to_cni_error(e, f"detaching container {inv.container_id} ({inv.ifname})") \
                from None
        remember(inv, conf, e)
    return


def remember(inv: Invocation, conf: OvernetConf, e: ApiError) -> None:
    try:
        path = pending.remember(conf.pending_dir, inv.container_id, inv.ifname, conf.network)
    except OSError as err:
        raise CniError(TRY_AGAIN_LATER, "the overnet agent is not available and the DEL of "
                       f"container {inv.container_id} cannot be kept for later in "
                       f"{conf.pending_dir}", f"{e.message}; {err}") from None
    print(f"overnet-cni: agent unavailable ({e.message}); DEL kept in {path}", file=sys.stderr)


def cmd_check(client: Client, inv: Invocation, conf: OvernetConf) -> None:
    what = f"checking container {inv.container_id} ({inv.ifname})"
    try:
        report = client.get(endpoint_path(inv.container_id, inv.ifname, "/check"))
        expected = result_address(conf.prev_result, inv.ifname, inv.netns)
        actual = client.get(endpoint_path(inv.container_id, inv.ifname))["ip"] \
            if expected else None
    except ApiError as e:
        raise to_cni_error(e, what, not_found=UNKNOWN_CONTAINER) from None
    problems = list(report.get("problems") or [])
    if expected and actual != expected:
        problems.append(f"the agent holds address {actual}, the previous result {expected}")
    if problems or not report.get("ok", False):
        raise CniError(INTERNAL, f"{what}: {'; '.join(problems) or 'not ok'}",
                       "; ".join(problems))


def cmd_gc(client: Client, conf: OvernetConf, keep: set[tuple[str, str]]) -> None:
    """Detach this host's CNI endpoints of this network that the runtime no longer lists.
    The agent's GC spans every network of the runtime, so other networks' endpoints are kept
    explicitly: a GC of one network list must not touch another's."""
    try:
        endpoints = client.get("/endpoints", runtime=RUNTIME)
        for ep in endpoints:
            if conf.network not in (ep.get("network_name"), ep.get("network")):
                keep.add((ep["container_id"], ep["ifname"]))
        client.post("/endpoints/gc", {
            "runtime": RUNTIME,
            "keep": [{"container_id": c, "ifname": i} for c, i in sorted(keep)]})
    except ApiError as e:
        raise to_cni_error(e, f"collecting stale endpoints of network {conf.network}") from None


def cmd_status(client: Client, conf: OvernetConf) -> None:
    """Ready when the agent answers and knows the network."""
    try:
        client.get(f"/networks/{ref(conf.network)}")
    except ApiError as e:
        raise CniError(NOT_AVAILABLE, f"network {conf.network} is not available: {e.message}",
                       f"agent socket {conf.socket}") from None
