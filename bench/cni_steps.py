"""Where an `overnet-cni` ADD's time goes (part of the runtimes benchmark): each step measured
on its own, in the same rounds as the whole ADDs of runtimes_bench.cni_add.

- spawn: starting a trivial program from this process (/bin/true), the floor of any plugin;
- enter: the same through the sandbox host's namespaces (nsenter), as every plugin here is run
  (the reference's ADD pays it too);
- shim: the installed shim, started the same way, sending its call to a stub agent that
  answers at once (its own cost: this minus spawn);
- route: the agent's POST /cni for an ADD, sent straight to its socket (no plugin process);
- attach: the agent's POST /endpoints, what the route calls in-process (route minus attach:
  the route's own cost);
each ADD followed by its DEL, untimed. Milliseconds per sample.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time

from overnet.api import wire
from overnet.api.cniroute import encode_call
from overnet.sandbox.lab import Lab

STEPS = ("spawn", "enter", "shim", "route", "attach")
STUB_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\n{}\n"


class StubAgent:
    """A unix socket that answers every POST /cni with an empty success, at once."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-stub-")
        self.path = os.path.join(self.dir, "stub.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return      # closed
            with conn:
                if wire.whole(wire.read_message(conn)):
                    conn.sendall(STUB_ANSWER)

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def _spawn(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=60,
                          check=False)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]}: {proc.stdout.decode()} {proc.stderr.decode()}")
    return took


def _request(sock: str, method: str, target: str, body: bytes | None) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    status, _, data = wire.exchange(sock, 60, method, target, body)
    took = time.perf_counter() - t0
    if status >= 300 or (target == "/cni" and not data.startswith(b"0\n")):
        raise RuntimeError(f"{method} {target}: {status} {data[:300]!r}")
    return took, data


def _route(sock: str, env: dict[str, str], conf: bytes) -> float:
    took, _ = _request(sock, "POST", "/cni", encode_call(dict(env, CNI_COMMAND="ADD"), conf))
    _request(sock, "POST", "/cni", encode_call(dict(env, CNI_COMMAND="DEL"), conf))
    return took


def _attach(sock: str, env: dict[str, str], network: str) -> float:
    body = {"network": network, "container_id": env["CNI_CONTAINERID"], "runtime": "cni",
            "netns": env["CNI_NETNS"], "ifname": "eth0", "name": env["CNI_CONTAINERID"][:12]}
    took, _ = _request(sock, "POST", "/endpoints", json.dumps(body).encode())
    _request(sock, "DELETE", f"/endpoints/{env['CNI_CONTAINERID']}/eth0", None)
    return took


class StepTimer:
    """One sample of each step per `round()`, on sandbox host net-1 (its agent and /run), run
    between the whole ADDs of the same round so that both see the same load."""

    def __init__(self, lab: Lab, bindir: str, network: str) -> None:
        self.lab, self.bindir = lab, bindir
        self.sock = os.path.join(lab.host("net-1").run_dir, "overnet", "overnet.sock")
        self.conf = json.dumps({"cniVersion": "1.0.0", "name": network,
                                "type": "overnet-cni"}).encode()
        self.network = network
        self.stub = StubAgent()
        self.stub_conf = json.dumps({"cniVersion": "1.0.0", "name": network,
                                     "type": "overnet-cni", "agentSocket": self.stub.path}
                                    ).encode()
        self.times: dict[str, list[float]] = {k: [] for k in STEPS}
        self.turn = 0

    def round(self) -> None:
        ns_name, cid = f"bs{secrets.token_hex(3)}", secrets.token_hex(16)
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
               "CNI_NETNS": f"/run/netns/{ns_name}", "CNI_PATH": self.bindir}
        t = self.times
        t["spawn"].append(_spawn(["/bin/true"], self.stub_conf, env))
        t["enter"].append(_spawn(self.lab.enter_argv(self.lab.host("net-1")) + ["/bin/true"],
                                 self.stub_conf, env))
        t["shim"].append(_spawn([os.path.join(self.bindir, "overnet-cni")], self.stub_conf,
                                env))
        self.lab.run("net-1", ["ip", "netns", "add", ns_name])
        self.turn ^= 1      # which of the two goes first alternates
        try:
            for step in ("route", "attach")[::1 if self.turn else -1]:
                t[step].append(_route(self.sock, env, self.conf) if step == "route" else
                               _attach(self.sock, dict(env, CNI_CONTAINERID=cid[::-1]),
                                       self.network))
        finally:
            self.lab.run("net-1", ["ip", "netns", "del", ns_name])

    def samples(self) -> dict[str, list[float]]:
        """ms per step."""
        return {k: [1000 * t for t in v] for k, v in self.times.items()}

    def close(self) -> None:
        self.stub.close()
