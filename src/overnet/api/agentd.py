"""`overnet agent`: run the daemon and serve its API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

from ..agent.config import AgentConfig
from ..agent.daemon import Agent
from ..errors import OvernetError
from ..store.base import StoreError
from .server import serve


async def _main(cfg: AgentConfig, plugin_opts: dict[str, Any]) -> int:
    agent = Agent(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = plugin = None
    try:
        await agent.start()
        if cfg.metrics_addr:          # the agent's supervisor closes it when it stops
            await _serve_metrics(agent, cfg.metrics_addr)
        server = await serve(agent, cfg.socket)
        logging.getLogger("overnet").info("serving on unix://%s", cfg.socket)
        if plugin_opts.get("docker_plugin"):
            from ..docker.server import DockerPlugin
            plugin = DockerPlugin(agent, plugin_opts["docker_socket"])
            await plugin.start(plugin_opts["docker_plugin_socket"])
        await stop.wait()
        return 0
    except (OvernetError, StoreError) as e:
        print(f"Error: {getattr(e, 'message', e)}", file=sys.stderr)
        return 1
    finally:
        if plugin is not None:
            await plugin.close()
        if server is not None:
            await server.close()
        await agent.stop()


async def _serve_metrics(agent: Agent, addr: str) -> None:
    from ..observe.serve import serve_metrics
    await serve_metrics(agent, addr)
    logging.getLogger("overnet").info("metrics on http://%s/metrics", addr)


def main(options_json: str) -> None:
    """The agent process `overnet agent` execs, its options parsed there (cli/main.py)."""
    sys.exit(run_agent(json.loads(options_json)))


def run_agent(opts: dict[str, Any]) -> int:
    logging.basicConfig(level=opts.pop("log_level").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = AgentConfig(store=opts["store"], name=opts["name"], advertise=opts["advertise"],
                      socket=opts["socket_path"], state_dir=opts["state_dir"],
                      default_network=opts["default_network"],
                      default_range=opts["default_range"], bridge_subnet=opts["bridge_subnet"],
                      vxlan_port=opts["vxlan_port"], gc_grace=opts["gc_grace"],
                      block_grace=opts["block_grace"],
                      resync_every=opts["resync_every"], start_expiry=opts["start_expiry"],
                      dns=opts["dns"],
                      metrics_addr=opts.get("metrics_addr"),
                      flannel=bool(opts.get("flannel")),
                      subnet_prefix=opts.get("subnet_prefix") or "/coreos.com/network",
                      subnet_file=opts.get("subnet_file") or "/run/flannel/subnet.env",
                      ip_masq=bool(opts.get("ip_masq")),
                      flannel_network=opts.get("flannel_network"),
                      flannel_backend=opts.get("flannel_backend") or "vxlan")
    try:
        plugin_opts = {k: opts.get(k) for k in ("docker_plugin", "docker_plugin_socket",
                                                   "docker_socket")}
        return asyncio.run(_main(cfg, plugin_opts))
    except OvernetError as e:
        print(f"Error: {e.message}", file=sys.stderr)
        return 1
