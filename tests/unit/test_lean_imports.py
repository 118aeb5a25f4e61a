"""The agent's process loads only the parts of pyroute2 it uses (RSS), and code that wants the
rest still gets it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import overnet.api.agentd
from overnet.dataplane.plumbing import IPRoute
assert IPRoute.__module__ == "pyroute2.iproute.linux"
heavy = sorted(m for m in sys.modules if m.startswith(("pyroute2.ndb", "pyroute2.ipdb",
                                                       "pyroute2.plan9", "sqlite3")))
assert heavy == [], heavy
import pyroute2
from pyroute2 import IPRoute as Full, NDB       # the whole package, on demand
assert Full is IPRoute and "pyroute2.ndb" in sys.modules
from pyroute2 import config                     # submodules keep working either way
print("ok")
"""


def test_agent_loads_only_the_netlink_part_of_pyroute2() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


AGENT = """
import sys
import overnet.api.agentd
from overnet.api.server import _observe_routes
from overnet.api import http
from types import SimpleNamespace
_observe_routes(http.RouteTableDef(), SimpleNamespace(observer=SimpleNamespace()))  # its API
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("prometheus_client", "dns",
                                                             "graphviz")
                or m in ("overnet.observe.metrics", "overnet.dns.server"))
assert loaded == [], loaded
from overnet.dns import DnsServer              # what an agent loads once it serves names
from overnet.observe.metrics import AgentCollector   # and once /metrics is scraped
assert "dns.message" in sys.modules and "prometheus_client" in sys.modules
print("ok")
"""


def test_agent_loads_metrics_and_dns_only_when_used() -> None:
    out = subprocess.run([sys.executable, "-c", AGENT], capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_agent_process_runs_without_the_cli() -> None:
    """`overnet agent` parses its options with click, then execs the agent proper (AGENT_MAIN):
    that process must not load the CLI back (1.2 MB of every agent)."""
    from overnet.cli.main import AGENT_MAIN
    from overnet.fsutil import package_root
    probe = AGENT_MAIN.replace("main(sys.argv[2])",
                               "print(sorted(m for m in sys.modules "
                               "if m.split('.')[0] == 'click' or m.startswith('overnet.cli')))")
    out = subprocess.run([sys.executable, "-I", "-c", probe, package_root(), "{}"],
                         capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)
