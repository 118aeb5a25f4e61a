"""Real container runtimes on sandbox hosts: each host gets its own Podman (CNI backend,
overnet-cni, its own storage and config) and its own dockerd (overnet's network and IPAM
plugin); both run a small busybox image made here from Debian's busybox-static (nothing is
pulled from a registry).

A host's runtimes live in files under the lab's directory, in the host's own /run (dockerd's
socket) and in environment variables that `sandbox ssh` sets, so that on a host plain
`podman run --network multihost …` and `docker run --network multihost …` work as they would
on a machine set up by hand."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable

from .topology import Host, LabError

RUNTIMES = ("podman", "docker")
IMAGE = "localhost/busybox:latest"
BUSYBOX = "/bin/busybox"
REFERENCE_PLUGINS = "/usr/lib/cni"

Run = Callable[[list[str]], subprocess.CompletedProcess]   # runs a command on the host


def parse(value: str) -> list[str]:
    """`--runtimes podman,docker` -> ["podman", "docker"], refusing unknown names."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in RUNTIMES:
            raise LabError(f"invalid runtime {name!r}: choose from {', '.join(RUNTIMES)}")
        if name not in available():
            raise LabError(f"{name} (or busybox-static) is not installed: run "
                           "`bash scripts/setup.sh`")
    return names


def available() -> list[str]:
    """The runtimes this machine has (for the demo)."""
    have = [n for n in RUNTIMES if shutil.which("dockerd" if n == "docker" else n)]
    return have if os.path.exists(BUSYBOX) else []


def agent_args(runtimes: list[str]) -> list[str]:
    """What every agent needs for these runtimes."""
    return ["--docker-plugin"] if "docker" in runtimes else []


def busybox_tar() -> bytes:
    """A root filesystem with just /bin/busybox and its applet links, as a tar stream."""
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for a in applets:
            if a != "busybox":
                info = tarfile.TarInfo(f"bin/{a}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
    return buf.getvalue()


def kill_cgroup(parent: str) -> None:
    """Container processes a runtime left (their own net and pid namespaces put them out of
    reach of the lab's clean-up): found by cgroup, killed, cgroups removed."""
    marker = f"/{parent}/"
    for pid_s in os.listdir("/proc"):
        if not pid_s.isdigit():
            continue
        try:
            with open(f"/proc/{pid_s}/cgroup") as f:
                if marker in f.read():
                    os.kill(int(pid_s), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    time.sleep(0.05)
    base = "/sys/fs/cgroup"
    for ctl in os.listdir(base) if os.path.isdir(base) else []:
        top = os.path.join(base, ctl, parent)
        for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _check(proc: subprocess.CompletedProcess, what: str, h: Host) -> None:
    if proc.returncode != 0:
        raise LabError(f"{what} on {h.name} failed: "
                       f"{(proc.stderr or proc.stdout or '').strip()[-300:]}")


# --- Podman --------------------------------------------------------------------------------

def podman_env(host_dir: str) -> dict[str, str]:
    d = os.path.join(host_dir, "podman")
    return {"CONTAINERS_CONF": os.path.join(d, "containers.conf"),
            "CONTAINERS_STORAGE_CONF": os.path.join(d, "storage.conf")}


def write_podman_config(host_dir: str) -> None:
    """The host's own storage, CNI plugin and config dirs, and the ulimits this machine needs
    (no CAP_SYS_RESOURCE here: Podman's defaults would fail)."""
    d = os.path.join(host_dir, "podman")
    for sub in ("storage", "run", "cni/bin", "cni/net.d"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(d, "storage.conf"), "w") as f:
        f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{d}/storage"\n'
                f'runroot = "{d}/run"\n')
    with open(os.path.join(d, "containers.conf"), "w") as f:
        f.write('[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n'
                '[network]\nnetwork_backend = "cni"\n'
                f'cni_plugin_dirs = ["{d}/cni/bin"]\n'
                f'network_config_dir = "{d}/cni/net.d"\n')


def setup_podman(h: Host, host_dir: str, network: str, run: Run) -> None:
    """Podman on `h` with the overnet network `network` (its conflist) and the image; `run`
    must carry podman_env()."""
    write_podman_config(host_dir)
    d = os.path.join(host_dir, "podman")
    for name in os.listdir(REFERENCE_PLUGINS):   # portmap & co., chained after overnet-cni
        link = os.path.join(d, "cni/bin", name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(REFERENCE_PLUGINS, name), link)
    _check(run(["overnet", "cni", "install", "--bin-dir", f"{d}/cni/bin", "--conf-dir",
                f"{d}/cni/net.d", "--network", network]), "overnet cni install", h)
    tar = os.path.join(d, "busybox.tar")
    with open(tar, "wb") as f:
        f.write(busybox_tar())
    _check(run(["podman", "import", "--quiet", tar, IMAGE]), "podman import", h)


def stop_podman(run: Run) -> None:
    """Remove every container while the agent still answers the CNI DELs."""
    run(["podman", "rm", "--all", "--force", "--time", "0"])


# --- Docker --------------------------------------------------------------------------------

def dockerd_argv(data_root: str, cgroup_parent: str) -> list[str]:
    """dockerd in a sandbox host: its /run is the host's own; no bridge, no iptables (overnet
    gives the network); --live-restore so containers outlive a dockerd restart."""
    return ["dockerd", "--data-root", data_root, "--exec-root", "/run/docker",
            "--host", "unix:///run/docker.sock", "--pidfile", "/run/docker.pid",
            "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", cgroup_parent,
            "--storage-driver", "vfs", "--bridge", "none", "--iptables=false",
            "--ip-masq=false", "--live-restore", "--log-level", "warn"]


def wait_docker(h: Host, run: Run, alive: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while run(["docker", "version"]).returncode != 0:
        if not alive() or time.monotonic() > deadline:
            raise LabError(f"dockerd on {h.name} did not start (its log: dockerd.log)")
        time.sleep(0.2)


def setup_docker(h: Host, host_dir: str, network: str, run: Run) -> None:
    """The image, and the Docker network `network` on overnet's plugin (the cluster-wide
    overnet network of the same name)."""
    tar = os.path.join(host_dir, "busybox-docker.tar")
    with open(tar, "wb") as f:
        f.write(busybox_tar())
    _check(run(["docker", "import", tar, IMAGE]), "docker import", h)
    _check(run(["docker", "network", "create", "-d", "overnet", "--ipam-driver", "overnet",
                network]), "docker network create", h)


def stop_docker(run: Run, pid: int, cgroup_parent: str, kill: Callable[[int], None]) -> None:
    ids = run(["docker", "ps", "-aq"]).stdout.split()
    if ids:
        run(["docker", "rm", "-f", *ids])
    kill(pid)
    kill_cgroup(cgroup_parent)
