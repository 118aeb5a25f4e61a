"""Throwaway "hosts" for dataplane tests: network namespaces on a private underlay.

Each host is a network namespace whose eth0 is a veth plugged into a bridge in the root
namespace. The bridge carries no address, so no test traffic can leave the namespaces the test
made. Everything is named with a random token and removed on teardown, also after a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from overnet.dataplane import netns, syscalls

UNDERLAY_PREFIX = "192.168.77."  # only ever configured inside the hosts' namespaces


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


def in_ns(path: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (ip, bridge, ping, cat) inside the network namespace at `path`."""
    return run("nsenter", f"--net={path}", *cmd, check=check)


def ping(src_ns: str, dst_ip: str, count: int = 3) -> bool:
    res = in_ns(src_ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", dst_ip, check=False)
    return res.returncode == 0


@dataclass
class Host:
    name: str
    ns: str  # path of the host's network namespace
    underlay_ip: str
    state_dir: str  # where this host's overlay network namespaces live


@dataclass
class Lab:
    """Two or more hosts on one underlay, plus helpers to make container namespaces."""

    token: str
    root: str  # temporary directory holding every namespace file of the test
    bridge: str  # underlay bridge in the root namespace
    hosts: list[Host] = field(default_factory=list)
    uplinks: list[str] = field(default_factory=list)  # root-side veth ends

    def container(self, name: str) -> str:
        path = os.path.join(self.root, "containers", name)
        netns.create_netns(path)
        return path

    def net_ns(self, host: Host, name: str) -> str:
        return os.path.join(host.state_dir, f"{name}-{self.token}")


def make_lab(n_hosts: int = 2) -> Lab:
    token = secrets.token_hex(2)
    root = tempfile.mkdtemp(prefix=f"overnet-dp-{token}-")
    lab = Lab(token=token, root=root, bridge=f"onu{token}")
    try:
        os.makedirs(os.path.join(root, "containers"))
        with IPRoute() as ipr:
            ipr.link("add", ifname=lab.bridge, kind="bridge")
            br = ipr.link("get", ifname=lab.bridge)[0]["index"]
            ipr.link("set", index=br, state="up")
            for i in range(n_hosts):
                name = chr(ord("a") + i)
                host = Host(name=name, ns=os.path.join(root, f"host-{name}"),
                            underlay_ip=f"{UNDERLAY_PREFIX}{i + 1}",
                            state_dir=os.path.join(root, f"state-{name}", "netns"))
                netns.create_netns(host.ns)
                netns.ensure_private_dir(host.state_dir)
                lab.hosts.append(host)
                uplink = f"onu{token}{name}"
                fd = os.open(host.ns, os.O_RDONLY)
                try:
                    ipr.link("add", ifname=uplink, kind="veth", master=br, state="up",
                             peer={"ifname": "eth0", "net_ns_fd": fd})
                finally:
                    os.close(fd)
                lab.uplinks.append(uplink)
                with netns.entered(host.ns):
                    hipr = IPRoute()
                with hipr:
                    idx = hipr.link("get", ifname="eth0")[0]["index"]
                    hipr.addr("add", index=idx, address=host.underlay_ip, prefixlen=24)
                    hipr.link("set", index=idx, state="up")
    except BaseException:
        destroy_lab(lab)
        raise
    return lab


def destroy_lab(lab: Lab) -> None:
    """Remove everything make_lab and the test made (best effort, never raises)."""
    with IPRoute() as ipr:
        # Deleted explicitly: they would only go asynchronously with the host namespaces.
        for name in [*lab.uplinks, lab.bridge]:
            try:
                ipr.link("del", index=ipr.link("get", ifname=name)[0]["index"])
            except Exception:
                pass
    for dirpath, _dirs, files in os.walk(lab.root, topdown=False):
        for f in files:
            netns.delete_netns(os.path.join(dirpath, f))
        if syscalls.is_mountpoint(dirpath):  # the private state directories
            try:
                syscalls.umount2(dirpath, syscalls.MNT_DETACH)
            except OSError:
                pass
    shutil.rmtree(lab.root, ignore_errors=True)


def leftovers(lab: Lab) -> list[str]:
    """What a lab left behind in the root namespace and the mount table (should be empty)."""
    found = []
    with IPRoute() as ipr:
        found += [f"link {m.get('ifname')}" for m in ipr.link("dump")
                  if lab.token in (m.get("ifname") or "")]
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if lab.root in line]
    if os.path.exists(lab.root):
        found.append(f"directory {lab.root}")
    return found
