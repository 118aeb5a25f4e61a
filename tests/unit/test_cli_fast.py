"""cli/fast.py: the lean `overnet` entry path behaves exactly like the click CLI, and so does
the compiled front (cfront/overnet.c) with the agent's POST /cli (api/cliroute.py) behind it.

All three are run as real processes against a small fake agent (HTTP on a unix socket in this
test's temporary directory) and must print the same, exit the same and send the same
requests. The fake agent answers POST /cli with the route's own code over its other answers,
recording the requests that code makes in-process as if they had come over the socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from overnet import cfront
from overnet.api import cliroute
from overnet.api.client import answer
from overnet.api.wire import read_message
from overnet.cli import fast, launcher

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
        self.cli = True       # False: an older agent, without POST /cli (404)
        self.cli_calls = 0
        self.hang = False     # True: POST /cli is never answered
        self.held: list[socket.socket] = []
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
        if target == "/cli":
            self.cli_calls += 1
            if self.hang:
                self.held.append(conn.dup())
                return
            if not self.cli:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            payload = asyncio.run(cliroute.handle(self, body))
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\n"
                         "Content-Type: text/plain\r\n\r\n".encode() + payload)
            return
        self.requests.append((method, target, json.loads(body) if body else None))
        status, reply = self._route(method, target)
        payload = json.dumps(reply).encode()
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n"
                     f"Content-Type: application/json\r\n\r\n".encode() + payload)

    async def call(self, method: str, target: str, body: object = None) -> object:
        """cliroute's in-process call of the agent's routes (LocalApi.call)."""
        self.requests.append((method, target, json.loads(json.dumps(body)) if body else None))
        status, reply = self._route(method, target)
        return answer(status, "X", json.dumps(reply).encode())

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
        for conn in self.held:
            conn.close()


@pytest.fixture
def agent(tmp_path):
    a = FakeAgent(str(tmp_path / "agent.sock"))
    yield a
    a.close()


FAST = [sys.executable, "-c", "from overnet.cli.fast import main; main()"]
CLICK = [sys.executable, "-c", "from overnet.cli.main import main; main()"]


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> list[str]:
    """The compiled front, the Python launcher beside it (as launcher.install writes them)."""
    work = tmp_path_factory.mktemp("front")
    exe = str(work / "overnet")
    assert launcher.install(exe) == ""          # gcc is in scripts/setup.sh
    with open(exe, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    return [exe]


def run_as(argv: list[str], agent: FakeAgent, args: tuple[str, ...]
           ) -> tuple[subprocess.CompletedProcess, list]:
    agent.requests.clear()
    env = {**os.environ, "OVERNET_HOST": "unix://" + agent.path, "COLUMNS": "100"}
    proc = subprocess.run(argv + list(args), capture_output=True, text=True, env=env,
                          check=False, timeout=60)
    return proc, list(agent.requests)


def both(agent: FakeAgent, *args: str, front: list[str] | None = None
         ) -> tuple[subprocess.CompletedProcess, list, list]:
    """Run the command line through each path; the results and the fast and click paths'
    requests (the compiled front's must be the fast path's)."""
    (f, freq), (c, creq) = run_as(FAST, agent, args), run_as(CLICK, agent, args)
    assert (f.stdout, f.stderr, f.returncode) == (c.stdout, c.stderr, c.returncode), args
    if front is not None:
        b, breq = run_as(front, agent, args)
        assert (b.stdout, b.stderr, b.returncode) == (f.stdout, f.stderr, f.returncode), args
        assert breq == freq, args
    return f, freq, creq


@pytest.mark.parametrize("args", [
    ["run", "-d", "--name", "web", "--net", "n1", "-e", "A=1", "-eB=2", "--link", "a:b",
     "busybox", "sleep", "-d", "--name", "x"],
    ["run", "-dit", "--rm", "--name=web", "--network=n2", "--publish-service", "s.n", "true"],
    ["run", "--privileged", "-d", "--", "sh", "-c", "true"],
    ["run", "-d", "--env=K=V=W", "--", "echo", "-e"],
    ["run", "-d"],
])
def test_run_detached_sends_the_same_request_and_prints_the_id(agent, front, args):
    res, freq, creq = both(agent, *args, front=front)
    assert res.returncode == 0 and res.stdout == "c" * 64 + "\n"
    assert freq == creq and freq[0][:2] == ("POST", "/containers")


@pytest.mark.parametrize("args", [["ps"], ["ps", "-a"], ["ps", "-q"], ["ps", "--all", "-q"],
                                  ["ps", "-aq"]])
def test_ps_prints_the_same_table(agent, front, args):
    res, freq, creq = both(agent, *args, front=front)
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
def test_errors_and_other_commands_match_click(agent, front, args):
    _, freq, creq = both(agent, *args, front=front)
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


def test_the_front_has_the_agent_run_the_hot_commands_in_one_request(agent, front):
    for args in (["run", "-d", "true"], ["ps", "-a"]):
        proc, requests = run_as(front, agent, tuple(args))
        assert proc.returncode == 0 and len(requests) == 1
    assert agent.cli_calls == 2
    run_as(front, agent, ("network", "ls"))       # not one of them: no /cli call
    assert agent.cli_calls == 2


def test_an_agent_without_the_route_gets_the_python_cli(agent, front):
    agent.cli = False
    res, freq, _ = both(agent, "run", "-d", "--name", "web", "true", front=front)
    assert res.stdout == "c" * 64 + "\n" and agent.cli_calls == 1


def test_the_front_does_not_run_a_command_twice_when_the_agent_is_late(agent, tmp_path):
    """An agent that may still be making the container is not asked again (in Python)."""
    quick = str(tmp_path / "overnet")
    subprocess.run(["cc", "-O2", "-std=c99", "-DTIMEOUT_S=1", "-I", cfront.HERE, "-o", quick,
                    launcher.FRONT_SOURCE], check=True, timeout=120)
    agent.hang = True
    proc, requests = run_as([quick], agent, ("run", "-d", "true"))
    assert proc.returncode == 1 and agent.cli_calls == 1 and requests == []
    assert proc.stderr == f"Error: the overnet agent at {agent.path} did not answer in time\n"


@pytest.mark.parametrize("body", [b"run\0true\0", b"run\0-it\0sh\0", b"exec\0x\0sh\0",
                                  b"ps\0--help\0", b"network\0ls\0", b"", b"run"])
def test_the_route_leaves_what_it_does_not_take_to_the_python_cli(agent, body):
    """A foreground run needs the caller's terminal; the rest is the CLI's to parse."""
    assert asyncio.run(cliroute.handle(agent, body)) == b"-\n"
    assert agent.requests == []


def test_the_route_answers_errors_as_the_cli_prints_them(agent):
    assert asyncio.run(cliroute.handle(agent, b"run\0-d\0-e\0X\0true\0")) == \
        b"1\nError: invalid --env 'X': expected KEY=VALUE\n"
    agent._route = lambda method, target: (409, {"message": "name web is in use"})
    assert asyncio.run(cliroute.handle(agent, b"run\0-d\0--name\0web\0true\0")) == \
        b"1\nError: name web is in use\n"
    # after the request went out, nothing is handed back (the front would run it twice)
    agent._route = lambda method, target: (201, {"Name": "no id"})
    assert asyncio.run(cliroute.handle(agent, b"run\0-d\0true\0")).startswith(
        b"1\nError: the agent failed: ")
