"""overnet's command line: Docker-like commands that talk to the local agent only."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

import click

from ..api.client import ApiError, Client, ref
from . import fast
from .format import table

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Failure(click.ClickException):
    """One line on stderr, exit code 1."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.message}", err=True)


def client(ctx: click.Context) -> Client:
    try:
        return Client(ctx.find_root().params.get("host"))
    except ApiError as e:
        raise Failure(e.message) from None


def shared(fn: Any, *args: Any) -> Any:
    """A command's implementation shared with the lean entry path (cli/fast.py)."""
    try:
        return fn(*args)
    except fast.Fail as e:
        raise Failure(str(e)) from None


def call(ctx: click.Context, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return getattr(client(ctx), method)(path, *args, **kwargs)
    except ApiError as e:
        raise Failure(e.message) from None


class LazyGroup(click.Group):
    """Sub-groups whose modules load only when used: a CLI call's start-up time is most of
    what `overnet run -d` costs."""

    lazy = {"sandbox": "overnet.cli.sandbox", "subnet": "overnet.cli.subnet",
            "cni": "overnet.cli.cni"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | self._available())

    def _available(self) -> set[str]:
        import importlib.util
        return {n for n, mod in self.lazy.items() if importlib.util.find_spec(mod)}

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands and name in self._available():
            import importlib
            self.add_command(getattr(importlib.import_module(self.lazy[name]), name))
        return super().get_command(ctx, name)


LazyGroup.lazy["events"] = "overnet.cli.observe"     # seeing inside: cli/observe.py
LazyGroup.lazy["doctor"] = "overnet.cli.observe"
LazyGroup.lazy["graph"] = "overnet.cli.observe"


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.option("-H", "--host", metavar="unix:///PATH",
              help="Agent socket (default: $OVERNET_HOST, else /run/overnet/overnet.sock).")
@click.version_option(package_name="overnet")
def cli(host: str | None) -> None:
    """overnet: one flat container network across Linux hosts, on etcd."""


# --- agent --------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@click.option("--store", required=True, metavar="etcd://HOST:PORT", help="Cluster store.")
@click.option("--name", required=True, help="This host's name in the cluster.")
@click.option("--advertise", required=True, metavar="ADDRESS",
              help="This host's underlay IPv4 address (the VXLAN tunnel endpoint).")
@click.option("--socket", "socket_path", default="/run/overnet/overnet.sock", show_default=True)
@click.option("--state-dir", default="/run/overnet", show_default=True)
@click.option("--default-network", metavar="DRIVER:NAME",
              help="Network for `run` without --net, created if missing (e.g. overlay:multihost).")
@click.option("--default-range", default="10.128.0.0/9", show_default=True,
              help="Range the default /16 pools of new networks come from.")
@click.option("--bridge-subnet", default="172.17.0.0/16", show_default=True)
@click.option("--vxlan-port", default=4789, show_default=True, type=int)
@click.option("--metrics-addr", metavar="IP:PORT",
              help="Serve Prometheus /metrics, /healthz and /readyz there (off by default).")
@click.option("--flannel", is_flag=True,
              help="Lease this host's bridge subnet in flannel's etcd layout (host subnets).")
@click.option("--flannel-network", metavar="CIDR",
              help="Write this network config if the store has none (implies --flannel).")
@click.option("--flannel-backend", type=click.Choice(["vxlan", "host-gw"]), default="vxlan",
              show_default=True, help="Backend of the config written by --flannel-network.")
@click.option("--subnet-prefix", default="/coreos.com/network", show_default=True,
              help="etcd prefix of the network config and subnet leases.")
@click.option("--subnet-file", default="/run/flannel/subnet.env", show_default=True,
              help="Where to write FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, ...")
@click.option("--ip-masq", is_flag=True,
              help="Masquerade container traffic leaving the flannel network (nftables).")
@click.option("--gc-grace", default=3600.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a host's agent must be gone before its records are removed "
                   "(an agent that is down is not a dead host).")
@click.option("--block-grace", default=86400.0, show_default=True,
              type=click.FloatRange(min=0),
              help="Seconds before a gone host's address blocks may go to other hosts (its "
                   "containers may still hold those addresses).")
@click.option("--resync-every", default=10.0, show_default=True,
              type=click.FloatRange(min=0.1),
              help="Seconds between re-checks of the kernel against the store.")
@click.option("--start-expiry", default=120.0, show_default=True,
              type=click.FloatRange(min=1),
              help="Seconds a created container may wait for its process before it is "
                   "removed.")
@click.option("--dns/--no-dns", default=True, show_default=True,
              help="Serve each network's names on its gateway address (port 53).")
@click.option("--docker-plugin", is_flag=True,
              help="Serve Docker's network and IPAM plugin API (-d overnet --ipam-driver "
                   "overnet).")
@click.option("--docker-plugin-socket", default="/run/docker/plugins/overnet.sock",
              show_default=True, help="Where dockerd looks for the plugin.")
@click.option("--docker-socket", default="/run/docker.sock", show_default=True,
              help="dockerd's API, asked for the names of its networks.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def agent(**opts: Any) -> None:
    """Run this host's agent (in the foreground)."""
    # The agent proper runs in a fresh interpreter, with the same PID, stdio and environment:
    # the CLI (click and every command) would otherwise stay in every agent's memory (1.2 MB).
    import json
    from ..fsutil import package_root
    os.execv(sys.executable, [sys.executable, "-I", "-c", AGENT_MAIN, package_root(),
                              json.dumps(opts)])


# The agent process: `python -I -c AGENT_MAIN PACKAGE_ROOT OPTIONS_JSON`.
AGENT_MAIN = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from overnet.api.agentd import main; main(sys.argv[2])")


# --- networks -------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def network() -> None:
    """Manage networks."""


@network.command("create", context_settings=CONTEXT)
@click.option("-d", "--driver", default="overlay", show_default=True,
              type=click.Choice(["overlay"]))
@click.option("--subnet", metavar="CIDR", help="Address pool (default: next free /16).")
@click.option("--gateway", metavar="IP", help="Gateway address (default: first of the subnet).")
@click.argument("name")
@click.pass_context
def network_create(ctx: click.Context, driver: str, subnet: str | None, gateway: str | None,
                   name: str) -> None:
    """Create a cluster-wide network."""
    net = call(ctx, "post", "/networks", {"name": name, "driver": driver, "subnet": subnet,
                                          "gateway": gateway})
    click.echo(net["id"])


@network.command("ls", context_settings=CONTEXT)
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.pass_context
def network_ls(ctx: click.Context, quiet: bool) -> None:
    """List networks."""
    nets = call(ctx, "get", "/networks")
    if quiet:
        click.echo("".join(n["id"][:12] + "\n" for n in nets), nl=False)
        return
    click.echo(table(["NETWORK ID", "NAME", "DRIVER"],
                     [[n["id"][:12], n["name"], n["driver"]] for n in nets]))


@network.command("inspect", context_settings=CONTEXT)
@click.argument("refs", nargs=-1, required=True, metavar="NAME|ID...")
@click.pass_context
def network_inspect(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Show networks as JSON."""
    click.echo(json.dumps([call(ctx, "get", f"/networks/{ref(r)}") for r in refs], indent=2))


@network.command("rm", context_settings=CONTEXT)
@click.argument("refs", nargs=-1, required=True, metavar="NAME|ID...")
@click.pass_context
def network_rm(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Remove networks (refused while containers are attached)."""
    for r in refs:
        call(ctx, "delete", f"/networks/{ref(r)}")
        click.echo(r)


# --- services -------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def service() -> None:
    """Services published by containers."""


@service.command("ls", context_settings=CONTEXT)
@click.pass_context
def service_ls(ctx: click.Context) -> None:
    """List every service of the cluster."""
    svcs = call(ctx, "get", "/services")
    click.echo(table(["SERVICE ID", "NAME", "NETWORK", "CONTAINER"],
                     [[s["id"][:12], s["name"], s["network_name"], s["container"][:12]]
                      for s in svcs]))


# --- containers -----------------------------------------------------------------------------

@cli.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="Run in the background, print the ID.")
@click.option("-i", "--interactive", is_flag=True, help="Keep standard input open.")
@click.option("-t", "--tty", is_flag=True, help="Use the terminal (with -i).")
@click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits.")
@click.option("--name", help="Container name (default: a generated adjective_surname).")
@click.option("--net", "--network", "net", help="Network (default: the agent's default).")
@click.option("--publish-service", metavar="SVC[.NET[.DRIVER]]",
              help="Publish SVC on NET (created with DRIVER if missing).")
@click.option("--link", "links", multiple=True, metavar="NAME[:ALIAS]",
              help="Add NAME (as ALIAS) to /etc/hosts and the environment.")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE")
@click.option("--privileged", is_flag=True,
              help="All capabilities, the host's PIDs, the agent's files: no confinement.")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, detach: bool, interactive: bool, tty: bool, auto_remove: bool,
        name: str | None, net: str | None, publish_service: str | None, links: tuple[str, ...],
        env: tuple[str, ...], privileged: bool, cmd: tuple[str, ...]) -> None:
    """Run a command in a new container (default: /bin/sh)."""
    body = shared(fast.run_body, detach, interactive, tty, auto_remove, name, net,
                  publish_service, list(links), list(env), list(cmd), privileged)
    c = call(ctx, "post", "/containers", body)
    if detach:
        click.echo(c["Id"])
        return
    sys.exit(shared(fast.foreground, ctx.find_root().params.get("host"), c, interactive))


@cli.command(context_settings=CONTEXT)
@click.option("-a", "--all", "show_all", is_flag=True, help="Also exited containers.")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.pass_context
def ps(ctx: click.Context, show_all: bool, quiet: bool) -> None:
    """List containers on this host."""
    cs = call(ctx, "get", "/containers", all="1" if show_all else "")
    text, nl = fast.ps_text(cs, quiet, time.time())
    click.echo(text, nl=nl)


@cli.command("exec", context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True)
@click.option("-t", "--tty", is_flag=True)
@click.argument("container")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, interactive: bool, tty: bool, container: str,
          cmd: tuple[str, ...]) -> None:
    """Run a command in a running container."""
    sys.exit(shared(fast.exec_cmd, ctx.find_root().params.get("host"), container, list(cmd),
                    interactive, tty))


@cli.command(context_settings=CONTEXT)
@click.option("-t", "--time", "timeout", default=10, show_default=True,
              help="Seconds to wait before killing.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def stop(ctx: click.Context, timeout: int, containers: tuple[str, ...]) -> None:
    """Stop running containers (SIGTERM, then SIGKILL)."""
    for name in containers:
        call(ctx, "post", f"/containers/{ref(name)}/stop", t=str(timeout))
        click.echo(name)


@cli.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Kill and remove running containers.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, containers: tuple[str, ...]) -> None:
    """Remove containers."""
    for name in containers:
        call(ctx, "delete", f"/containers/{ref(name)}", force="1" if force else "")
        click.echo(name)


@cli.command(context_settings=CONTEXT)
@click.argument("container")
@click.pass_context
def logs(ctx: click.Context, container: str) -> None:
    """Show a detached container's output."""
    try:
        data = client(ctx).request("GET", f"/containers/{ref(container)}/logs", raw=True)
    except ApiError as e:
        raise Failure(e.message) from None
    sys.stdout.buffer.write(data)


TEMPLATE = re.compile(r"\{\{\s*((?:\.[A-Za-z0-9_]+)+|\.)\s*\}\}")


def render_template(template: str, data: Any) -> str:
    """The Go-template subset people use with inspect: {{ .A.B }} and {{ . }}."""
    def field(m: re.Match) -> str:
        value = data
        for part in m.group(1).split(".")[1:]:
            if not isinstance(value, dict) or part not in value:
                raise Failure(f"template {template!r}: no field {m.group(1)!r}")
            value = value[part]
        return value if isinstance(value, str) else json.dumps(value)
    return TEMPLATE.sub(field, template)


@cli.command(context_settings=CONTEXT)
@click.option("-f", "--format", "fmt", metavar="TEMPLATE",
              help="e.g. '{{ .NetworkSettings.SandboxKey }}'")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str | None, containers: tuple[str, ...]) -> None:
    """Show containers as JSON."""
    found = [call(ctx, "get", f"/containers/{ref(c)}") for c in containers]
    if fmt:
        for c in found:
            click.echo(render_template(fmt, c))
        return
    click.echo(json.dumps(found, indent=2))


def main() -> None:
    if os.geteuid() != 0 and len(sys.argv) > 1 and sys.argv[1] in ("agent", "sandbox", "run",
                                                                     "exec"):
        click.echo(f"Error: overnet {sys.argv[1]} needs root (namespaces and netlink)", err=True)
        sys.exit(1)
    cli(prog_name="overnet")
