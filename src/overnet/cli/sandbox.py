"""`overnet sandbox …`: the seeds' lab on this machine."""

from __future__ import annotations

import os
import sys

import click

from ..sandbox.lab import DEFAULT_UNDERLAY, Lab, LabError
from ..sandbox.runtimes import parse as parse_runtimes
from .main import CONTEXT, Failure


def _lab(name: str) -> Lab:
    try:
        return Lab(name, say=lambda m: click.echo(m, err=True))
    except LabError as e:
        raise Failure(str(e)) from None


name_option = click.option("--name", "lab_name", default="overnet", show_default=True,
                           help="Sandbox name (prefix of its namespaces and devices).")


@click.group(context_settings=CONTEXT)
def sandbox() -> None:
    """A multi-host lab on this machine: store hosts (etcd) and N hosts, each a network
    namespace."""


def print_status(lab: Lab) -> None:
    rows = lab.status()
    click.echo("Current machine states:\n")
    for r in rows:
        state = "running" if r["alive"] else "not running"
        what = f"{r['role']} {r['address']}"
        if r["containers"] is not None:
            what += f", {r['containers']} container(s)"
        click.echo(f"{r['name']:<26}{state} ({what})")


@sandbox.command(context_settings=CONTEXT)
@click.option("--hosts", default=2, show_default=True, help="Number of hosts (net-1 … net-N).")
@click.option("--underlay", default=DEFAULT_UNDERLAY, show_default=True,
              help="Underlay subnet: the store is .10 (store-1 .10, store-2 .9, store-3 .8), "
                   "hosts .11, .12, …")
@click.option("--store-members", default=1, show_default=True, type=int,
              help="etcd members (1 or 3), each on its own store host; agents get them all.")
@click.option("--flannel", is_flag=True, help="Give every host's bridge a flannel subnet lease.")
@click.option("--backend", type=click.Choice(["vxlan", "host-gw"]), default="vxlan",
              show_default=True, help="Flannel backend (with --flannel).")
@click.option("--runtimes", default="", metavar="podman[,docker]",
              help="Real runtimes on every host, on overnet's networks: Podman through "
                   "overnet-cni, Docker through overnet's network plugin.")
@name_option
def up(hosts: int, underlay: str, store_members: int, flannel: bool, backend: str,
       runtimes: str, lab_name: str) -> None:
    """Build the lab (does nothing if it is already up)."""
    lab = _lab(lab_name)
    try:
        chosen = parse_runtimes(runtimes)
    except LabError as e:
        raise Failure(str(e)) from None
    # As in the flannel seed, `run` without --net goes to each host's bridge (docker0).
    opts = {"flannel-network": "10.1.0.0/16", "flannel-backend": backend,
            "default-network": "bridge:bridge"} if flannel else None
    try:
        made = lab.up(hosts=hosts, underlay=underlay, flannel=opts,
                      store_members=store_members, runtimes=chosen)
    except LabError as e:
        raise Failure(str(e)) from None
    if not made:
        click.echo(f"sandbox {lab_name} is already up; nothing changed "
                   "(`overnet sandbox down` first to rebuild it)", err=True)
    print_status(lab)


@sandbox.command(context_settings=CONTEXT)
@name_option
def down(lab_name: str) -> None:
    """Stop every process and remove every namespace, device and file of the lab."""
    lab = _lab(lab_name)
    if not lab.down():
        click.echo(f"sandbox {lab_name} is not up: nothing to do")


@sandbox.command(context_settings=CONTEXT)
@name_option
def status(lab_name: str) -> None:
    """Hosts, addresses, agents alive, containers running."""
    lab = _lab(lab_name)
    if lab.state is None:
        click.echo(f"sandbox {lab_name} is not up")
        return
    print_status(lab)


@sandbox.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@name_option
@click.argument("host")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def ssh(lab_name: str, host: str, cmd: tuple[str, ...]) -> None:
    """A shell on HOST (inside its namespaces), or `ssh HOST -- CMD …` to run one command."""
    lab = _lab(lab_name)
    try:
        argv, env = lab.ssh_argv(host, list(cmd[1:] if cmd[:1] == ("--",) else cmd))
    except LabError as e:
        raise Failure(str(e)) from None
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        raise Failure(f"cannot start {argv[0]}: {e}") from None


@sandbox.command(context_settings=CONTEXT)
@name_option
@click.option("--underlay", default=DEFAULT_UNDERLAY, show_default=True)
def demo(lab_name: str, underlay: str) -> None:
    """Bring a 2-host lab up and walk the overlay seed, step by step."""
    from ..sandbox.walkthrough import walk
    lab = _lab(lab_name)
    try:
        ok = walk(lab, underlay=underlay, echo=click.echo)
    except LabError as e:
        raise Failure(str(e)) from None
    sys.exit(0 if ok else 1)
