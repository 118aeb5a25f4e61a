"""The overlay seed's walkthrough, run for real on a sandbox and printed step by step."""

from __future__ import annotations

import re
import shlex
from typing import Callable

from .lab import Lab, LabError
from .runtimes import IMAGE, available


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
    """The seed, step by step; then the same network from Podman and Docker when they are
    installed. True if every step went as the seed says."""
    w = Walk(lab, echo)
    _bring_up(w, lab, underlay)
    ls1, c1, name1 = _first_container(w)
    c2, name2 = _second_host(w, ls1, c1, name1)
    _foobar(w, c2)
    if {"podman", "docker"} <= set(lab.state.runtimes):
        _runtimes(w, lab, name1, name2)
    return _summary(w, echo)


def _bring_up(w: Walk, lab: Lab, underlay: str) -> None:
    w.step("vagrant up: a store host and two hosts, each a network namespace")
    if not lab.up(hosts=2, underlay=underlay, runtimes=available()):
        w.echo("(the sandbox was already up: using it)")
    if len(lab.state.hosts) < 2:
        raise LabError("the walkthrough needs a sandbox with at least 2 hosts: "
                       "`overnet sandbox down`, then run the demo again")
    for row in lab.status():
        w.echo(f"{row['name']:<26}{'running' if row['alive'] else 'not running'}")
    w.step("The default networks, and no services yet")
    w.sh("net-1", "overnet", "network", "ls")
    w.sh("net-1", "overnet", "service", "ls")


def _first_container(w: Walk) -> tuple[str, str, str]:
    w.step("A container on net-1 and its /etc/hosts")
    c1 = w.sh("net-1", "overnet", "run", "-d", "sleep", "infinity").strip()
    hosts1 = w.sh("net-1", "overnet", "exec", c1, "cat", "/etc/hosts")
    name1 = w.sh("net-1", "overnet", "inspect", "-f", "{{ .Name }}", c1).strip()
    w.check(f"{name1}.multihost" in _names(hosts1), f"{name1} listed as {name1}.multihost")
    ls1 = w.sh("net-1", "overnet", "network", "ls")
    w.check("multihost" in ls1, "the multihost overlay is listed on net-1")
    return ls1, c1, name1


def _second_host(w: Walk, ls1: str, c1: str, name1: str) -> tuple[str, str]:
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
    return c2, name2


def _foobar(w: Walk, c2: str) -> None:
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
    eth0 = w.sh("net-2", "nsenter", f"--net={key}", "ip", "-d", "addr", "show", "eth0")
    foobar = w.sh("net-2", "overnet", "network", "inspect", "foobar")
    mine = re.search(r'"ip": "([^"]+)",\s*"mac": "([^"]+)"', foobar)
    w.check(mine is not None and f"inet {mine.group(1)}/" in eth0
            and f"link/ether {mine.group(2)} " in eth0,
            "the container's eth0 has the address and MAC of its record")
    ns = re.search(r'"namespace": "([^"]+)"', foobar)
    gateway = re.search(r'"gateway": "([^"]+)"', foobar)
    if ns and gateway:
        # The seed's namespace holds br0, vxlan1 and a veth per container; overnet's holds
        # vxlan0 and gw0 (the gateway), each container's eth0 a macvlan of vxlan0 like gw0.
        links = w.sh("net-2", "nsenter", f"--net={ns.group(1)}", "ip", "-d", "addr", "show")
        w.check(re.search(r"vxlan id \d+", links) is not None and "dstport 4789" in links,
                "the network's namespace holds a vxlan device on port 4789")
        w.check(re.search(r"gw0@vxlan0:.*\n(.*\n)*?\s+macvlan mode bridge", links) is not None
                and f"inet {gateway.group(1)}/" in links,
                "and gw0, a macvlan of it holding the gateway address")
        vxlan0 = re.search(r"^\s*(\d+): vxlan0@", links, re.M)
        lower = re.search(r"eth0@if(\d+):", eth0)
        w.check("macvlan mode bridge" in eth0 and vxlan0 is not None and lower is not None
                and vxlan0.group(1) == lower.group(1),
                "the container's eth0 is a macvlan of the same vxlan device (no bridge, no veth)")


def _runtimes(w: Walk, lab: Lab, name1: str, name2: str) -> None:
    """Beyond the seed: Podman (through overnet-cni) and Docker (through overnet's plugin)
    containers on the same multihost network, by address and by name."""
    w.step("Podman on net-1 and Docker on net-2 join the same network")
    gateway = re.search(r'"gateway": "([^"]+)"',
                        w.sh("net-1", "overnet", "network", "inspect", "multihost"))
    w.sh("net-1", "podman", "run", "-d", "--name", "pm", "--network", "multihost",
         IMAGE, "sleep", "100000")
    w.sh("net-2", "docker", "run", "-d", "--name", "dk", "--network", "multihost", "--dns",
         gateway.group(1) if gateway else "", IMAGE, "sleep", "100000")
    w.sh("net-1", "podman", "exec", "pm", "ip", "addr", "show", "eth0")
    w.step("Every runtime reaches every other, by name (overnet's DNS on the gateway)")
    w.sh("net-1", "podman", "exec", "pm", "ping", "-c", "1", "-W", "2", "dk")
    w.sh("net-1", "podman", "exec", "pm", "ping", "-c", "1", "-W", "2", name2)
    w.sh("net-2", "docker", "exec", "dk", "ping", "-c", "1", "-W", "2", name1)
    w.sh("net-2", "overnet", "service", "ls")


def _summary(w: Walk, echo: Callable[[str], None]) -> bool:
    echo("\nThe sandbox is up. Explore it:")
    echo("  overnet sandbox ssh net-1          # a shell on net-1 (`exit` to leave)")
    echo("  overnet sandbox ssh net-2 -- overnet ps")
    echo("  overnet sandbox ssh net-1 -- podman ps      # Podman and Docker, when installed")
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
