"""`overnet cni …`: install the CNI plugin for Podman and containerd; finish pending DELs."""

from __future__ import annotations

import click

from ..api.client import ApiError, Client, socket_path
from ..cni import install as installer
from ..cni.config import default_pending_dir
from ..cni.pending import entries, flush_pending
from .main import CONTEXT, Failure


@click.group(context_settings=CONTEXT)
def cni() -> None:
    """The CNI plugin overnet-cni (types overnet-cni and flannel)."""


@cni.command("install", context_settings=CONTEXT)
@click.option("--bin-dir", "bin_dirs", multiple=True, metavar="DIR",
              help="Where the runtime looks for plugins (default /usr/lib/cni, and "
                   "/opt/cni/bin if it exists). Repeatable.")
@click.option("--conf-dir", default=installer.DEFAULT_CONF_DIR, show_default=True,
              metavar="DIR", help="Where the runtime reads network configuration lists.")
@click.option("--network", default="overnet", show_default=True,
              help="The overnet network the conflist attaches containers to (also its name).")
@click.option("--cni-version", default="1.0.0", show_default=True,
              help="cniVersion of the conflist (Podman 4.3 and containerd 1.6 speak <= 1.0.0).")
@click.pass_context
def install(ctx: click.Context, bin_dirs: tuple[str, ...], conf_dir: str, network: str,
            cni_version: str) -> None:
    """Put overnet-cni and flannel into the CNI bin dir and write NETWORK.conflist."""
    host = ctx.find_root().params.get("host")
    try:
        socket = socket_path(host) if host else None
        written = installer.install(list(bin_dirs) or installer.default_bin_dirs(), conf_dir,
                                    network, cni_version, socket)
    except (installer.InstallError, ApiError) as e:
        raise Failure(str(e)) from None
    for path in written:
        click.echo(path)


@cni.command("flush", context_settings=CONTEXT)
@click.option("--pending-dir", metavar="DIR",
              help="Where the plugin kept them (default: cni-pending beside the agent socket).")
@click.pass_context
def flush(ctx: click.Context, pending_dir: str | None) -> None:
    """Send the DELs the plugin kept while the agent was away."""
    try:
        client = Client(ctx.find_root().params.get("host"))
    except ApiError as e:
        raise Failure(e.message) from None
    pending_dir = pending_dir or default_pending_dir(client.path)
    done = flush_pending(client, pending_dir)
    left = len(entries(pending_dir))
    click.echo(f"{done} pending DEL(s) finished, {left} left")
    if left:
        raise Failure(f"{left} DEL(s) still pending in {pending_dir}: is the agent running?")
