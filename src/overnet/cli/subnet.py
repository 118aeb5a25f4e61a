"""`overnet subnet …`: host subnets in flannel's layout (through the local agent)."""

from __future__ import annotations

import json
import time

import click

from .format import table
from .main import CONTEXT, call


@click.group(context_settings=CONTEXT)
def subnet() -> None:
    """Host subnets (flannel-compatible): network config and leases."""


@subnet.command("config", context_settings=CONTEXT)
@click.option("--network", metavar="CIDR", help="Write the config: the whole cluster network.")
@click.option("--subnet-len", type=int, help="Length of each host's subnet (default 24, or "
              "the network's length + 2 for networks smaller than /22).")
@click.option("--subnet-min", metavar="IP", help="Lowest subnet handed out.")
@click.option("--subnet-max", metavar="IP", help="Highest subnet handed out.")
@click.option("--backend", type=click.Choice(["vxlan", "host-gw"]), default="vxlan",
              show_default=True)
@click.option("--vni", type=int, help="vxlan: VNI (default 1).")
@click.option("--port", type=int, help="vxlan: UDP port (default 8472).")
@click.pass_context
def config(ctx: click.Context, network: str | None, subnet_len: int | None,
           subnet_min: str | None, subnet_max: str | None, backend: str, vni: int | None,
           port: int | None) -> None:
    """Show the network config, or write it with --network (agents read it at start)."""
    if network is None:
        if any(v is not None for v in (subnet_len, subnet_min, subnet_max, vni, port)):
            raise click.UsageError("--subnet-len, --subnet-min, --subnet-max, --vni and "
                                   "--port go with --network")
        got = call(ctx, "get", "/subnet/config")
        if "error" in got:
            click.echo(got["raw"])
            click.echo(f"Warning: {got['key']} is not a valid config: {got['error']}", err=True)
            return
        click.echo(json.dumps(got["config"], indent=2))
        return
    body = {"network": network, "subnet_len": subnet_len, "subnet_min": subnet_min,
            "subnet_max": subnet_max, "backend": backend, "vni": vni, "port": port}
    got = call(ctx, "request", "PUT", "/subnet/config", body)
    click.echo(json.dumps(got["config"], indent=2))


@subnet.command("lease", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
@click.pass_context
def lease(ctx: click.Context, as_json: bool) -> None:
    """This host's subnet lease."""
    got = call(ctx, "get", "/subnet/lease")
    if as_json:
        click.echo(json.dumps(got, indent=2))
        return
    expires = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(got["expires"]))
               if got["expires"] else "never (reservation)")
    rows = [("subnet", got["subnet"]), ("network", got["network"]),
            ("bridge address", got["gateway"]), ("public ip", got["public_ip"]),
            ("backend", got["backend"]), ("mtu", got["mtu"]), ("remote hosts", got["peers"]),
            ("expires", expires), ("key", got["key"]), ("value", got["value"])]
    for name, value in rows:
        click.echo(f"{name + ':':<16}{value}")
    for sub, why in sorted(got["errors"].items()):
        click.echo(f"Warning: lease {sub} not programmed: {why}", err=True)


@subnet.command("ls", context_settings=CONTEXT)
@click.pass_context
def ls(ctx: click.Context) -> None:
    """Every host's subnet lease."""
    got = call(ctx, "get", "/subnet/leases")
    click.echo(table(["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC"],
                     [[x["subnet"], x["public_ip"], x["backend"], x["vtep_mac"] or ""]
                      for x in got]))
