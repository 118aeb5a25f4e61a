"""Docker's own multi-host overlay on the same kind of lab: one dockerd per namespace host.

Docker 20.10 (Debian's docker.io) still has the classic, swarm-less overlay: every dockerd
points --cluster-store at an etcd (v2 API) and --cluster-advertise at its underlay address.
Each host is a sandbox host (network namespace + a holder owning a private /run and hostname),
so /run/docker, the socket, the pidfile and containerd's state are that host's own; the data
root is a directory of the lab. The lab's etcd already runs with --enable-v2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from overnet.sandbox.lab import Host, Lab, LabError, _alive, _kill, _tail
from overnet.sandbox.runtimes import BUSYBOX, kill_cgroup

IMAGE = "busybox:bench"


def docker_missing() -> str | None:
    """Why Docker cannot run here, or None."""
    for tool, pkg in (("dockerd", "docker.io"), ("docker", "docker.io")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {pkg}: bash bench/setup.sh)"
    if not os.path.exists(BUSYBOX):
        return f"{BUSYBOX} is missing (Debian package busybox-static: bash bench/setup.sh)"
    return None


class DockerLab(Lab):
    """A sandbox whose hosts run dockerd instead of the overnet agent."""

    def cgroup_parent(self, h: Host) -> str:
        return f"ovbench-{self.name}-{h.name}"

    def sock(self, h: Host) -> str:
        return h.run_dir + "/docker.sock"

    def _start_agent(self, h: Host, *_: object) -> None:
        st = self.state
        root = os.path.join(self.dir, h.name, "docker")
        os.makedirs(root, exist_ok=True)
        args = ["dockerd", "--data-root", root, "--exec-root", "/run/docker",
                "--host", "unix:///run/docker.sock", "--pidfile", "/run/docker.pid",
                "--cluster-store", f"etcd://{st.store.address}:2379",
                "--cluster-advertise", f"{h.address}:2376",
                "--exec-opt", "native.cgroupdriver=cgroupfs",
                "--cgroup-parent", self.cgroup_parent(h),
                "--storage-driver", os.environ.get("BENCH_DOCKER_STORAGE", "overlay2"),
                "--log-level", "warn"]
        h.agent_pid = self.launch(h, "dockerd.log", args).pid
        self._save()

    def _wait_agent(self, h: Host, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(self.sock(h)) and self.docker(h.name, "version", check=False,
                                                            timeout=10).returncode == 0:
                break
            if not _alive(h.agent_pid) or time.monotonic() > deadline:
                raise LabError(f"dockerd on {h.name} did not start: "
                               + _tail(os.path.join(self.dir, h.name, "dockerd.log")))
            time.sleep(0.1)
        self.say(f"dockerd  {h.name:<15} ready")

    def agent_log(self, h: Host) -> str:
        return os.path.join(self.dir, h.name, "dockerd.log")

    def docker_argv(self, host: str) -> list[str]:
        return ["docker", "-H", "unix://" + self.sock(self.host(host))]

    def docker(self, host: str, *args: str, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.docker_argv(host) + list(args), capture_output=True,
                              timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise LabError(f"docker {' '.join(args)} on {host}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
        return proc

    def out(self, host: str, *args: str, timeout: float = 120) -> str:
        return self.docker(host, *args, timeout=timeout).stdout.decode().strip()

    def import_image(self, tar: bytes) -> None:
        for h in self.state.hosts:
            self.docker(h.name, "import", "-", IMAGE, input=tar)

    def pid(self, host: str, container: str) -> int:
        return int(self.out(host, "inspect", "-f", "{{.State.Pid}}", container))

    # --- down -----------------------------------------------------------------------------

    def down(self, quiet: bool = False) -> bool:
        st = self.state
        if st is None:
            return False
        for h in st.hosts:
            if _alive(h.agent_pid) and os.path.exists(self.sock(h)):
                try:
                    ids = self.docker(h.name, "ps", "-aq", check=False,
                                      timeout=30).stdout.decode().split()
                    if ids:
                        self.docker(h.name, "rm", "-f", *ids, check=False, timeout=60)
                except subprocess.TimeoutExpired:
                    pass
            _kill(h.agent_pid, timeout=15)
        for h in st.hosts:
            self._kill_cgroup(self.cgroup_parent(h))
        return super().down(quiet=quiet)

    @staticmethod
    def _kill_cgroup(parent: str) -> None:
        kill_cgroup(parent)


def inspect_json(lab: DockerLab, host: str, container: str) -> dict:
    return json.loads(lab.out(host, "inspect", container))[0]
