"""cli/fast.py: the lean `overnet` entry path behaves exactly like the click CLI.

Both are run as real processes against a small fake agent (HTTP on a unix socket in this test's
temporary directory) and must print the same, exit the same and send the same requests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from overnet.api.wire import read_message
from overnet.cli import fast

NOW = time.time()
CONTAINERS = [
    {"Id": "a" * 64, "Name": "web", "Created": NOW - 7200,
     "State": {"Status": "running", "Running": True, "Pid": 1, "StartedAt": NOW - 7000,
               "ExitCode": None, "FinishedAt": 0},
     "Config": {"Cmd": ["sleep", "infinity", "and", "a", "long", "tail"], "AutoRemove": False},
     "NetworkSettings": {"IPAddress": "10.0.0.2", "Networks": {"multihost": {}}}},
    {"Id": "b" * 64, "Name": "old", "Created": NOW - 90000,
     "State": {"Status": "exited", "Running": False, "Pid": 0, "StartedAt": NOW - 89000,
               "ExitCode": 3, "FinishedAt": NOW - 80000},
     "Config": {"Cmd": ["true"], "AutoRemove": False},
     "NetworkSettings": {"IPAddress": "", "Networks": {}}},
]


class FakeAgent:
    """Answers the few requests the hot commands make; records each request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[tuple[str, str, object]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        head, _, body = read_message(conn).partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, target, _ = lines[0].split(" ")
        self.requests.append((method, target, json.loads(body) if body else None))
        status, answer = self._route(method, target)
        payload = json.dumps(answer).encode()
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n"
                     f"Content-Type: application/json\r\n\r\n".encode() + payload)

    @staticmethod
    def _route(method: str, target: str) -> tuple[int, object]:
        if method == "GET" and target.startswith("/containers?") or target == "/containers":
            if method == "POST":
                return 201, {"Id": "c" * 64, "Name": "new"}
            return 200, CONTAINERS if "all=1" in target else CONTAINERS[:1]
        if target == "/containers/old":
            return 200, CONTAINERS[1]
        return 404, {"message": f"no such container: {target.rsplit('/', 1)[-1]}"}

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def agent(tmp_path):
    a = FakeAgent(str(tmp_path / "agent.sock"))
    yield a
    a.close()


FAST = [sys.executable, "-c", "from overnet.cli.fast import main; main()"]
CLICK = [sys.executable, "-c", "from overnet.cli.main import main; main()"]


def both(agent: FakeAgent, *args: str) -> tuple[subprocess.CompletedProcess, list, list]:
    """Run the command line through both paths; the results and each one's requests."""
    out = []
    for argv in (FAST, CLICK):
        agent.requests.clear()
        env = {**os.environ, "OVERNET_HOST": "unix://" + agent.path, "COLUMNS": "100"}
        proc = subprocess.run(argv + list(args), capture_output=True, text=True, env=env,
                              check=False, timeout=60)
        out.append((proc, list(agent.requests)))
    (f, freq), (c, creq) = out
    assert (f.stdout, f.stderr, f.returncode) == (c.stdout, c.stderr, c.returncode), args
    return f, freq, creq


@pytest.mark.parametrize("args", [
    ["run", "-d", "--name", "web", "--net", "n1", "-e", "A=1", "-eB=2", "--link", "a:b",
     "busybox", "sleep", "-d", "--name", "x"],
    ["run", "-dit", "--rm", "--name=web", "--network=n2", "--publish-service", "s.n", "true"],
    ["run", "--privileged", "-d", "--", "sh", "-c", "true"],
    ["run", "-d", "--env=K=V=W", "--", "echo", "-e"],
    ["run", "-d"],
])
def test_run_detached_sends_the_same_request_and_prints_the_id(agent, args):
    res, freq, creq = both(agent, *args)
    assert res.returncode == 0 and res.stdout == "c" * 64 + "\n"
    assert freq == creq and freq[0][:2] == ("POST", "/containers")


@pytest.mark.parametrize("args", [["ps"], ["ps", "-a"], ["ps", "-q"], ["ps", "--all", "-q"],
                                  ["ps", "-aq"]])
def test_ps_prints_the_same_table(agent, args):
    res, freq, creq = both(agent, *args)
    assert res.returncode == 0 and freq == creq
    assert "a" * 12 in res.stdout


@pytest.mark.parametrize("args", [
    ["run", "-e", "NOEQUALS", "true"],          # bad value: the shared message
    ["run", "--bogus", "true"],                  # unknown option: click's message
    ["run", "--name"],                           # missing value
    ["run", "--detach=yes", "true"],             # a flag given a value
    ["ps", "extra"],
    ["ps", "--help"],
    ["exec", "web"],                             # missing command
    ["exec", "old", "true"],                     # not running
    ["exec", "-it", "nosuch", "sh"],             # 404 from the agent
    ["--version"],
    ["-H", "tcp://1.2.3.4", "ps"],               # bad -H value
    ["--host=unix:///nonexistent/overnet.sock", "ps"],
    ["-Hunix:///nonexistent/overnet.sock", "run", "-d", "true"],
    ["network", "ls"],
])
def test_errors_and_other_commands_match_click(agent, args):
    _, freq, creq = both(agent, *args)
    assert freq == creq


def test_parse_follows_clicks_rules():
    opts, rest = fast.parse(["-dit", "-eA=1", "-e", "B=2", "--name=x", "cmd", "-d"], fast.RUN)
    assert opts == {"detach": True, "interactive": True, "tty": True, "env": ["A=1", "B=2"],
                    "name": "x"}
    assert rest == ["cmd", "-d"]
    assert fast.parse(["--", "-x"], fast.RUN) == ({}, ["-x"])
    assert fast.parse(["-", "a"], fast.RUN) == ({}, ["-", "a"])
    for bad in (["--bogus"], ["-x"], ["--name"], ["-e"], ["--rm=1"], ["-h"], ["--help"]):
        with pytest.raises(fast.Fallback):
            fast.parse(bad, fast.RUN)


def test_other_commands_fall_back_to_click():
    for argv in ([], ["network", "ls"], ["--", "ps"], ["-H", "unix:///x"], ["--version"]):
        with pytest.raises(fast.Fallback):
            fast.dispatch(argv)


def test_run_body_rejects_bad_env():
    with pytest.raises(fast.Fail, match="'X'"):
        fast.run_body(True, False, False, False, None, None, None, [], ["X"], [])
    body = fast.run_body(True, False, False, False, None, None, None, [], ["A=b=c"], [])
    assert body["env"] == {"A": "b=c"} and body["cmd"] == ["/bin/sh"]
