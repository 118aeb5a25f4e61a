"""`overnet events`, `overnet doctor` and `overnet graph`: seeing inside the network."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import click

from ..api.client import ApiError
from .main import CONTEXT, Failure, call, client

DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
POLL = 30.0


def parse_duration(value: str, option: str) -> float:
    m = DURATION.match(value.strip())
    if not m:
        raise Failure(f"invalid {option} {value!r}: expected a duration such as 30s, 10m, 2h")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_filters(filters: tuple[str, ...]) -> str:
    types = []
    for f in filters:
        key, sep, value = f.partition("=")
        if key != "type" or not sep or not value:
            raise Failure(f"invalid --filter {f!r}: expected type=container|network|peer|"
                          "host|lease")
        types.append(value)
    return ",".join(types)


def show_event(e: dict[str, Any], fmt: str | None) -> str:
    if fmt == "json":
        return json.dumps(e)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e["time"]))
    stamp += f".{int(e['time'] % 1 * 1e6):06d}Z"
    attrs = ", ".join(f"{k}={v}" for k, v in e["attrs"].items())
    return f"{stamp} {e['type']} {e['action']} {e['actor']} (host={e['host']}" + \
        (f", {attrs})" if attrs else ")")


@click.command(context_settings=CONTEXT)
@click.option("--since", metavar="DURATION", help="Replay events of the last DURATION (10m).")
@click.option("--until", metavar="DURATION",
              help="Stop at DURATION ago (0s: replay up to now and exit).")
@click.option("-f", "--filter", "filters", multiple=True, metavar="type=TYPE",
              help="Only events of TYPE: container, network, peer, host, lease.")
@click.option("--format", "fmt", type=click.Choice(["json"]), help="One JSON object a line.")
@click.pass_context
def events(ctx: click.Context, since: str | None, until: str | None,
           filters: tuple[str, ...], fmt: str | None) -> None:
    """Stream what happens in the network, like `docker events`."""
    now = time.time()
    query: dict[str, Any] = {"type": parse_filters(filters)}
    if since:
        query["since"] = now - parse_duration(since, "--since")
    if until:
        query["until"] = now - parse_duration(until, "--until")
        for e in call(ctx, "get", "/events", **query)["events"]:
            click.echo(show_event(e, fmt))
        return
    c = client(ctx)
    try:
        after = None if since else c.get("/events", until="0")["last"]    # only what comes
        while True:
            q = {**query, "after": after or 0, "wait": POLL}
            got = c.request("GET", "/events", query={k: v for k, v in q.items() if v != ""})
            for e in got["events"]:
                click.echo(show_event(e, fmt))
            sys.stdout.flush()
            after, query["since"] = got["last"], ""
    except ApiError as e:
        raise Failure(e.message) from None
    except KeyboardInterrupt:
        return


def print_findings(found: list[dict[str, Any]]) -> None:
    for f in found:
        mark = "✔" if f["ok"] else "✘"
        line = f"{mark} {f['hop']}" + (f": {f['detail']}" if f["detail"] else "")
        click.echo(line)
        if not f["ok"] and f["fix"]:
            click.echo(f"    → {f['fix']}")


@click.command(context_settings=CONTEXT)
@click.option("--format", "fmt", type=click.Choice(["json"]))
@click.argument("containers", nargs=-1, metavar="[CONTAINER_A CONTAINER_B]")
@click.pass_context
def doctor(ctx: click.Context, fmt: str | None, containers: tuple[str, ...]) -> None:
    """Check this host, or the path between two containers hop by hop."""
    if len(containers) not in (0, 2):
        raise Failure(f"doctor takes no container or two, not {len(containers)}")
    if containers and fmt != "json":
        found = follow_path(ctx, *containers)
        result = {"ok": all(f["ok"] for f in found), "findings": found}
    elif containers:
        result = call(ctx, "get", "/doctor/path", a=containers[0], b=containers[1])
    else:
        if fmt != "json":
            click.echo("checking this host: store, records, loops, networks …", err=True)
        result = call(ctx, "get", "/doctor")
        if fmt != "json":
            print_findings(result["findings"])
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        bad = sum(not f["ok"] for f in result["findings"])
        click.echo(f"{'all good' if result['ok'] else f'{bad} problem(s)'} "
                   f"({len(result['findings'])} checks)")
    sys.exit(0 if result["ok"] else 1)


def follow_path(ctx: click.Context, a: str, b: str) -> list[dict[str, Any]]:
    """Print each hop as the agent checks it (progress on stderr); the findings."""
    found: list[dict[str, Any]] = []
    query = urlencode({"a": a, "b": b, "stream": "1"})
    try:
        for line in stream_lines(client(ctx).path, f"/doctor/path?{query}"):
            if "progress" in line:
                click.echo(f"… {line['progress']}", err=True)
            elif "finding" in line:
                found.append(line["finding"])
                print_findings([line["finding"]])
            elif "message" in line:
                raise Failure(line["message"])
    except ApiError as e:
        raise Failure(e.message) from None
    return found


def stream_lines(socket_path: str, target: str) -> Iterator[dict[str, Any]]:
    """GET a newline-delimited JSON stream over the agent's socket, one object at a time."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(120)
        try:
            sock.connect(socket_path)
        except OSError as e:
            raise ApiError(f"cannot reach the overnet agent at {socket_path} "
                           f"({e.strerror}): is it running?") from None
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        reader = sock.makefile("rb")
        status = reader.readline().split(b" ", 2)
        while reader.readline() not in (b"\r\n", b"\n", b""):
            pass
        if len(status) < 2 or status[1] != b"200":
            body = reader.read().decode(errors="replace")
            try:
                message = json.loads(body)["message"]
            except (ValueError, KeyError, TypeError):
                message = body.strip() or "the agent answered something unexpected"
            raise ApiError(message)
        for raw in reader:
            if raw.strip():
                yield json.loads(raw)


def write_picture(topo: dict[str, Any], fmt: str, output: str | None) -> None:
    from ..observe import graph
    try:
        data = graph.render(topo, fmt)
    except Exception as e:   # noqa: BLE001 - graphviz missing, or its `dot` binary
        why = (getattr(e, "stderr", b"") or str(e).encode()).decode(errors="replace")
        raise Failure(f"cannot draw the graph: {why.strip().splitlines()[-1]} (is Debian's "
                      "graphviz installed?)") from None
    if output:
        with open(output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)


@click.command(context_settings=CONTEXT)
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot"]), default="svg",
              show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write there (default: standard output).")
@click.pass_context
def graph(ctx: click.Context, fmt: str, output: str | None) -> None:
    """Draw the cluster: hosts, networks, endpoints and the VXLAN tunnels between hosts."""
    write_picture(call(ctx, "get", "/topology"), fmt, output)
