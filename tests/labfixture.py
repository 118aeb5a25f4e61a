"""A sandbox lab for tests: unique names, a private underlay, always torn down."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import stat
import subprocess
import time

import pytest

from overnet.sandbox.lab import Lab


def free_underlay() -> str:
    """A 192.168.X.0/24 not configured anywhere in the root namespace (the lab's own
    addresses only ever live inside its namespaces)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    while True:
        cand = f"192.168.{random.randrange(100, 250)}."
        if cand not in used:
            return cand + "0/24"


class LabForTests(Lab):
    """Lab plus the helpers tests use over and over."""

    def ov(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = self.run(host, ["overnet", *args])
        if check and proc.returncode != 0:
            raise AssertionError(f"overnet {' '.join(args)} on {host} failed "
                                 f"({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def out(self, host: str, *args: str) -> str:
        return self.ov(host, *args).stdout.strip()

    def api(self, host: str):
        return self.client(host)

    def sh(self, host: str, *cmd: str) -> subprocess.CompletedProcess:
        return self.run(host, list(cmd))

    def ping(self, host: str, container: str, target: str, count: int = 2) -> bool:
        return self.ov(host, "exec", container, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                       target, check=False).returncode == 0

    def inspect(self, host: str, container: str) -> dict:
        return json.loads(self.out(host, "inspect", container))[0]

    def netns_files(self, host: str) -> list[str]:
        return sorted(os.listdir(self.host(host).run_dir + "/overnet/netns"))


def make_lab(tmp_root: str, hosts: int = 2, **kw) -> LabForTests:
    lab = LabForTests(f"t{secrets.token_hex(2)}", root=tmp_root, say=lambda m: None)
    lab.up(hosts=hosts, underlay=free_underlay(), **kw)
    return lab


def wait_until(predicate, timeout: float = 5.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(every)


def keep_logs(lab: Lab, dest: str) -> None:
    """Agent and etcd logs outlive the lab, for a failure's post-mortem (regular files only:
    a runtime's storage holds named pipes and sockets, which cannot be copied)."""
    def regular(src: str, dst: str) -> None:
        if stat.S_ISREG(os.lstat(src).st_mode):
            shutil.copy2(src, dst)

    for h in lab.state.all_hosts():
        src = os.path.join(lab.dir, h.name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, h.name), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("etcd"), copy_function=regular)


@pytest.fixture(scope="module")
def lab2(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    lab = make_lab(str(root))
    try:
        yield lab
    finally:
        keep_logs(lab, str(root) + "-logs")
        lab.down(quiet=True)
