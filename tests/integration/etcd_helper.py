"""Start and stop throw-away etcd processes for tests: one member, or a cluster of several.

Each EtcdProcess gets free random ports on 127.0.0.1 and its own temp dir (data dir and
log); `stop()` kills exactly the process it started (by PID) and removes the temp dir.
With `netns_path` it runs inside that network namespace (through `nsenter --net=PATH`).
EtcdCluster starts several EtcdProcess members that form one cluster (unique token).

TcpProxy sits between one client and etcd so a test can drop that client's connection
(`cut()`) and let it back (`heal()`) while etcd and every other client go on, or let
requests through while losing every answer (`mute()`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick for an ephemeral bind), and
    not handed out before in this run: ports picked for one cluster are bound only when its
    members start, and the kernel may pick a port twice meanwhile (a member's client and
    peer listeners once got one port, and its etcd could not start)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


class EtcdProcess:
    def __init__(self, netns_path: str | None = None, name: str = "overnet-test", *,
                 peer_port: int | None = None, initial_cluster: str | None = None,
                 token: str | None = None) -> None:
        self.netns_path = netns_path
        self.name = name
        self.client_port = free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster  # "name=http://..,..." of a cluster's members
        self.token = token
        self.tmp = Path(tempfile.mkdtemp(prefix="overnet-etcd-"))
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_size_at_start = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    def command(self) -> list[str]:
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
               "--listen-client-urls", client, "--advertise-client-urls", client,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
               "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"]
        if self.token:
            cmd += ["--initial-cluster-token", self.token]
        if self.netns_path:
            cmd = ["nsenter", f"--net={self.netns_path}", *cmd]
        return cmd

    def start(self, timeout: float = 20.0) -> EtcdProcess:
        """Start etcd (again, on the same ports and data dir after stop(keep_data=True))."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        """Start the process without waiting (a cluster member is only ready once a quorum
        of its peers runs too)."""
        if self.proc is not None:
            raise RuntimeError("etcd already running")
        log = open(self.log_path, "ab")
        self._log_size_at_start = log.tell()  # "ready" must come from this run's log lines
        try:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def wait_ready(self, timeout: float) -> None:
        # The log line works inside any namespace; outside one, also insist the port answers.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{self.log_tail()}")
            log = self._log_since_start()
            if (b"serving client traffic" in log or b"ready to serve client" in log) and \
                    (self.netns_path or self._port_open()):
                return
            time.sleep(0.05)
        raise TimeoutError(f"etcd not ready after {timeout}s:\n{self.log_tail()}")

    def _log_since_start(self) -> bytes:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_size_at_start)
            return f.read()

    def _port_open(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, keep_data: bool = False) -> None:
        """Kill our etcd by PID (TERM, then KILL) and, unless keep_data, remove the temp dir."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # nsenter execs etcd, so the PID is etcd's own either way
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if not keep_data:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, keeping the data (a crash rather than a clean stop)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None

    def restart(self, timeout: float = 20.0) -> None:
        self.stop(keep_data=True)
        self.start(timeout)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave an etcd behind
        if getattr(self, "proc", None) is not None and os.getpid() == self._owner_pid:
            self.stop()

    _owner_pid = os.getpid()


class EtcdCluster:
    """`size` members on 127.0.0.1 (free ports, one temp dir each) forming one cluster.

    kill(i) is a crash (SIGKILL, data kept); start_member(i) brings that member back."""

    def __init__(self, size: int = 3) -> None:
        token = f"overnet-test-{uuid.uuid4().hex[:8]}"
        peers = [free_port() for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
        self.members = [EtcdProcess(name=f"m{i}", peer_port=p, initial_cluster=initial,
                                    token=token) for i, p in enumerate(peers)]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        try:
            for m in self.members:
                m.spawn()
            for m in self.members:
                m.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, index: int) -> None:
        self.members[index].kill()

    def start_member(self, index: int, timeout: float = 30.0) -> None:
        self.members[index].start(timeout)

    def member_of(self, endpoint: str) -> int:
        return self.endpoints.index(endpoint)

    def leader(self) -> int:
        """Index of the member the running members agree is the leader."""
        running = [m.endpoint for m in self.members if m.proc is not None]
        out = subprocess.run(["etcdctl", "--endpoints", ",".join(running), "endpoint",
                              "status", "-w", "json"], capture_output=True, text=True,
                             timeout=20, check=True, env={**os.environ, "ETCDCTL_API": "3"})
        status = json.loads(out.stdout)
        leader = status[0]["Status"]["leader"]
        for s in status:
            if s["Status"]["header"]["member_id"] == leader:
                return self.member_of(s["Endpoint"])
        raise RuntimeError(f"no running member is the leader: {out.stdout}")

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class TcpProxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:target_port (asyncio, in the test's loop)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.muted = False  # answers from etcd are dropped (requests still reach it)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    def mute(self) -> None:
        """From now on etcd gets every request but the client gets no answer."""
        self.muted = True

    async def heal(self) -> None:
        if self._server is None:
            await self.start()

    close = cut

    async def _handle(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            down_w.transport.abort()
            return
        self._conns |= {down_w, up_w}
        await asyncio.gather(self._pipe(down_r, up_w), self._pipe(up_r, down_w, answers=True))
        self._conns -= {down_w, up_w}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    answers: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                if answers and self.muted:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()  # one side gone: drop the other too
