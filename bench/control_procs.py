"""The simulated control plane's processes: one throw-away etcd and the worker processes
holding the simulated agents (bench/control_worker.py), driven one JSON line at a time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.integration.etcd_helper import free_port

from . import stats
from .labs import HERE, LineProcess


class Etcd:
    """A throw-away single-member etcd on loopback; stop() kills exactly it and its data."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bn-ctl-etcd-")
        self.port, peer = free_port(), free_port()     # never one port twice
        url, purl = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{peer}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "wb")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "ctl", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
             "--initial-cluster", f"ctl={purl}", "--quota-backend-bytes", str(8 << 30)],
            stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.metrics()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("etcd did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return stats.parse_prometheus(r.read().decode())

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Workers:
    """The worker processes; host i lives in worker i % len(workers)."""

    def __init__(self, count: int, store_url: str, channel: str = "agent") -> None:
        self.dir = tempfile.mkdtemp(prefix="bn-ctl-")
        root = os.path.dirname(HERE)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        self.procs = [LineProcess([sys.executable, "-m", "bench.control_worker", store_url,
                                   os.path.join(self.dir, f"w{i}"), channel], env=env)
                      for i in range(count)]
        for p in self.procs:
            p.expect("ready", 60)

    def ask(self, i: int, timeout: float, **cmd) -> dict:
        self.procs[i].send(json.dumps(cmd))
        return json.loads(self.procs[i].expect("ok", timeout))

    def ask_all(self, timeout: float, cmds: list[dict | None]) -> list[dict | None]:
        """The same kind of command to several workers at once; None: leave that one out."""
        for p, c in zip(self.procs, cmds):
            if c is not None:
                p.send(json.dumps(c))
        return [json.loads(p.expect("ok", timeout)) if c is not None else None
                for p, c in zip(self.procs, cmds)]

    def kill(self) -> None:
        """Workers stuck in a step that did not finish: SIGKILL, then wait for each."""
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
        self.procs = []

    def close(self) -> None:
        for p in self.procs:
            try:
                p.send(json.dumps({"op": "stop"}))
                p.expect("ok", 120)
            except Exception:   # noqa: BLE001 - clean-up goes on
                pass
            p.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def host_name(i: int) -> str:
    return f"h{i:05d}"


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def etcd_counts(m: dict[str, float]) -> dict[str, float]:
    return {"keys_written": stats.metric_sum(m, "etcd_mvcc_put_total")
            + stats.metric_sum(m, "etcd_mvcc_delete_total"),
            "write_requests": sum(stats.metric_sum(m, "grpc_server_handled_total",
                                                   grpc_method=u)
                                  for u in ("Put", "DeleteRange", "Txn")),
            "db_bytes": stats.metric_sum(m, "etcd_mvcc_db_total_size_in_bytes"),
            "watchers": stats.metric_sum(m, "etcd_debugging_mvcc_watcher_total"),
            "keys": stats.metric_sum(m, "etcd_debugging_mvcc_keys_total")}
