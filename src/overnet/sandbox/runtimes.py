"""Real container runtimes on sandbox hosts: each host gets its own Podman (CNI backend,
overnet-cni, its own storage and config) and, with the Docker plugin, its own dockerd; both
run a small busybox image made here from Debian's busybox-static (nothing is pulled).

A host's runtimes are configured through files under the lab's directory and environment
variables that `sandbox ssh` sets, so that on a host plain `podman run --network multihost
busybox …` works as it would on a machine set up by hand."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable

from .topology import Host, LabError

RUNTIMES = ("podman", "docker")
IMAGE = "localhost/busybox:latest"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ping", "sleep", "cat", "ip", "ifconfig", "nslookup", "hostname", "wget",
           "nc", "ls", "true", "echo", "grep", "ps")
REFERENCE_PLUGINS = "/usr/lib/cni"


def parse(value: str) -> list[str]:
    """`--runtimes podman,docker` -> ["podman", "docker"], refusing unknown names."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in RUNTIMES:
            raise LabError(f"invalid runtime {name!r}: choose from {', '.join(RUNTIMES)}")
        if shutil.which(name) is None:
            raise LabError(f"{name} is not installed: run `bash scripts/setup.sh`")
    return names


def busybox_tar(lab_dir: str) -> str:
    """A one-layer image: busybox-static and its applets as symlinks (made once per lab)."""
    path = os.path.join(lab_dir, "busybox.tar")
    if os.path.exists(path):
        return path
    if not os.path.exists(BUSYBOX):
        raise LabError(f"{BUSYBOX} is missing: install Debian's busybox-static")
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for d in ("etc", "tmp", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    os.replace(tmp, path)
    return path


def podman_dir(host_dir: str) -> str:
    return os.path.join(host_dir, "podman")


def podman_env(host_dir: str) -> dict[str, str]:
    d = podman_dir(host_dir)
    return {"CONTAINERS_CONF": os.path.join(d, "containers.conf"),
            "CONTAINERS_STORAGE_CONF": os.path.join(d, "storage.conf")}


def write_podman_config(host_dir: str) -> dict[str, str]:
    """The host's own storage, CNI plugin and config dirs, and the ulimits this machine needs
    (no CAP_SYS_RESOURCE here: Podman's defaults would fail)."""
    d = podman_dir(host_dir)
    for sub in ("storage", "run", "cni/bin", "cni/net.d"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(d, "storage.conf"), "w") as f:
        f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{d}/storage"\n'
                f'runroot = "{d}/run"\n')
    with open(os.path.join(d, "containers.conf"), "w") as f:
        f.write('[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n'
                '[network]\nnetwork_backend = "cni"\n'
                f'cni_plugin_dirs = ["{d}/cni/bin", "{REFERENCE_PLUGINS}"]\n'
                f'network_config_dir = "{d}/cni/net.d"\n')
    return podman_env(host_dir)


def setup_podman(h: Host, host_dir: str, lab_dir: str, network: str,
                 run: Callable[[list[str], dict[str, str]], subprocess.CompletedProcess]
                 ) -> None:
    """Configure Podman on host `h` for the overnet network `network` and load the image.
    `run(argv, extra_env)` runs a command on the host."""
    env = write_podman_config(host_dir)
    d = podman_dir(host_dir)
    steps = [["overnet", "cni", "install", "--bin-dir", f"{d}/cni/bin", "--conf-dir",
              f"{d}/cni/net.d", "--network", network],
             ["podman", "import", "--quiet", busybox_tar(lab_dir), IMAGE]]
    for argv in steps:
        proc = run(argv, env)
        if proc.returncode != 0:
            raise LabError(f"{' '.join(argv[:3])} on {h.name} failed: "
                           f"{(proc.stderr or proc.stdout).strip()[-300:]}")
