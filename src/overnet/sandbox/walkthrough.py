"""The overlay seed's walkthrough, run for real on a sandbox and printed step by step."""

from __future__ import annotations

import re
import shlex
from typing import Callable

from .lab import Lab, LabError


class Walk:
    def __init__(self, lab: Lab, echo: Callable[[str], None]) -> None:
        self.lab = lab
        self.echo = echo
        self.failures: list[str] = []

    def sh(self, host: str, *cmd: str, expect_ok: bool = True) -> str:
        self.echo(f"\nvagrant@{host}:~$ {shlex.join(cmd)}")
        proc = self.lab.run(host, list(cmd))
        out = (proc.stdout + proc.stderr).rstrip()
        if out:
            self.echo("    " + out.replace("\n", "\n    "))
        if (proc.returncode == 0) != expect_ok:
            self.fail(f"{shlex.join(cmd)} on {host} exited with {proc.returncode}")
        return proc.stdout

    def check(self, ok: bool, what: str) -> None:
        self.echo(f"  {'✔' if ok else '✘'} {what}")
        if not ok:
            self.fail(what)

    def fail(self, what: str) -> None:
        self.failures.append(what)

    def step(self, title: str) -> None:
        self.echo(f"\n## {title}")


def _names(hosts_file: str) -> set[str]:
    return {line.split()[1] for line in hosts_file.splitlines() if len(line.split()) > 1}


def walk(lab: Lab, underlay: str, echo: Callable[[str], None] = print) -> bool:
    w = Walk(lab, echo)
    w.step("vagrant up: a store host and two hosts, each a network namespace")
    if not lab.up(hosts=2, underlay=underlay):
        echo("(the sandbox was already up: using it)")
    if len(lab.state.hosts) < 2:
        raise LabError("the walkthrough needs a sandbox with at least 2 hosts: "
                       "`overnet sandbox down`, then run the demo again")
    for row in lab.status():
        echo(f"{row['name']:<26}{'running' if row['alive'] else 'not running'}")

    w.step("The default networks, and no services yet")
    ls1 = w.sh("net-1", "overnet", "network", "ls")
    w.sh("net-1", "overnet", "service", "ls")

    w.step("A container on net-1 and its /etc/hosts")
    c1 = w.sh("net-1", "overnet", "run", "-d", "sleep", "infinity").strip()
    hosts1 = w.sh("net-1", "overnet", "exec", c1, "cat", "/etc/hosts")
    name1 = w.sh("net-1", "overnet", "inspect", "-f", "{{ .Name }}", c1).strip()
    w.check(f"{name1}.multihost" in _names(hosts1), f"{name1} listed as {name1}.multihost")
    ls1 = w.sh("net-1", "overnet", "network", "ls")
    w.check("multihost" in ls1, "the multihost overlay is listed on net-1")

    w.step("net-2 sees the same networks and the service of the container on net-1")
    ls2 = w.sh("net-2", "overnet", "network", "ls")
    w.check(same_networks(ls1, ls2), "same networks on both hosts (built-in IDs are per host)")
    svc = w.sh("net-2", "overnet", "service", "ls")
    w.check(name1 in svc and c1[:12] in svc, f"service {name1} of {c1[:12]} listed on net-2")

    w.step("A container on net-2: its /etc/hosts lists both")
    c2 = w.sh("net-2", "overnet", "run", "-d", "sleep", "infinity").strip()
    name2 = w.sh("net-2", "overnet", "inspect", "-f", "{{ .Name }}", c2).strip()
    hosts2 = w.sh("net-2", "overnet", "exec", c2, "cat", "/etc/hosts")
    w.check({name1, name2} <= _names(hosts2), f"{name1} and {name2} both in /etc/hosts on net-2")
    hosts1 = w.sh("net-1", "overnet", "exec", c1, "cat", "/etc/hosts")
    w.check(name2 in _names(hosts1), f"{name2} appeared in /etc/hosts on net-1")

    w.step("Ping each container by name, across hosts")
    w.sh("net-1", "overnet", "exec", c1, "ping", "-c", "2", "-W", "2", name2)
    w.sh("net-2", "overnet", "exec", c2, "ping", "-c", "2", "-W", "2", name1)

    w.step("A non-default overlay network, seen from the other host")
    w.sh("net-1", "overnet", "network", "create", "-d", "overlay", "foobar")
    ls2 = w.sh("net-2", "overnet", "network", "ls")
    w.check("foobar" in ls2, "foobar is listed on net-2")
    c3 = w.sh("net-2", "overnet", "run", "-d", "--publish-service=bar.foobar.overlay",
              "sleep", "infinity").strip()
    svc = w.sh("net-2", "overnet", "service", "ls")
    w.check(re.search(r"\bbar\s+foobar\s+" + c3[:12], svc) is not None,
            "service bar on foobar is listed")

    w.step("Isolation: a container on foobar cannot reach one on multihost")
    ip2 = w.sh("net-2", "overnet", "inspect", "-f", "{{ .NetworkSettings.IPAddress }}",
               c2).strip()
    w.sh("net-2", "overnet", "exec", c3, "ping", "-c", "1", "-W", "1", ip2, expect_ok=False)

    w.step("A look at the interfaces")
    key = w.sh("net-2", "overnet", "inspect", "-f", "{{ .NetworkSettings.SandboxKey }}",
               c3).strip()
    w.sh("net-2", "ls", "/run/overnet/netns")
    w.sh("net-2", "nsenter", f"--net={key}", "ip", "addr", "show", "eth0")
    foobar = w.sh("net-2", "overnet", "network", "inspect", "foobar")
    ns = re.search(r'"namespace": "([^"]+)"', foobar)
    if ns:
        links = w.sh("net-2", "nsenter", f"--net={ns.group(1)}", "ip", "-d", "link", "show",
                     "vxlan0")
        w.check(re.search(r"vxlan id \d+", links) is not None and "dstport 4789" in links,
                "the network's namespace holds a vxlan device on port 4789")

    echo("\nThe sandbox is up. Explore it:")
    echo("  overnet sandbox ssh net-1          # a shell on net-1 (`exit` to leave)")
    echo("  overnet sandbox ssh net-2 -- overnet ps")
    echo("  overnet sandbox status")
    echo("  overnet sandbox down               # remove everything")
    if w.failures:
        echo(f"\n{len(w.failures)} step(s) did not go as the seed says:")
        for f in w.failures:
            echo(f"  - {f}")
        return False
    echo("\nEvery step went as the seed says.")
    return True


def _rows(table: str) -> set[tuple[str, ...]]:
    return {tuple(line.split()) for line in table.splitlines()[1:] if line.strip()}


def same_networks(a: str, b: str) -> bool:
    """Every name and driver alike; overlay networks also share their ID."""
    def key(table: str) -> set[tuple[str, ...]]:
        return {r if r[-1] == "overlay" else r[1:] for r in _rows(table)}
    return bool(_rows(a)) and key(a) == key(b)
