"""The compiled overnet-cni shim (cni/shim/overnet_cni.c) against a stub of the agent's
POST /cni on a temporary socket: what it sends (decoded by the agent's own decode_call), what
it prints and exits with, and every case it must hand to the Python plugin instead. The
Python plugin is absent here, so a hand-over shows as the shim's own error naming it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading

import pytest

from overnet.api.cniroute import decode_call
from overnet.api.wire import read_message
from overnet import cfront
from overnet.cni import install as installer

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAME=web", "CNI_PATH": "/usr/lib/cni"}


class Stub:
    """Answers each connection with `self.answer` after reading one whole request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.answer: bytes | None = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n0\n{}\n"
        self.calls: list[bytes] = []
        self.held: list[socket.socket] = []     # answer None: connections left unanswered
        self.keep_open = False      # answer, then leave the connection open
        self.pause = 0              # answer in two writes: this many bytes, then the rest
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.answer is None:
                    self.held.append(conn.dup())
                self.calls.append(read_message(conn))
                if self.answer is not None:
                    if self.pause:
                        conn.sendall(self.answer[:self.pause])
                        threading.Event().wait(0.05)
                    conn.sendall(self.answer[self.pause:])
                    if self.keep_open:
                        self.held.append(conn.dup())

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("shim")
    binary, why = installer.compile_shim(str(workdir))
    assert binary is not None, why          # gcc is in scripts/setup.sh
    return os.path.join(workdir, "overnet-cni")


@pytest.fixture
def stub(tmp_path):
    s = Stub(str(tmp_path / "agent.sock"))
    yield s
    s.close()


def run(shim: str, stdin: bytes, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    return subprocess.run([shim], input=stdin, env=env, capture_output=True, timeout=30,
                          check=False)


def conf(stub: Stub, **extra) -> bytes:
    return json.dumps(dict({"cniVersion": "1.0.0", "name": "n", "type": "overnet-cni",
                            "agentSocket": stub.path}, **extra)).encode()


def handed_over(proc: subprocess.CompletedProcess) -> dict:
    err = json.loads(proc.stdout)
    assert proc.returncode == 1 and err["code"] == 999, err
    assert "overnet-cni-python" in err["details"] and set(err) == {
        "cniVersion", "code", "msg", "details"}
    return err


def test_one_request_and_the_agent_s_answer(shim, stub):
    stdin = conf(stub, prevResult={"interfaces": [{"name": "x}{\"y"}]})
    proc = run(shim, stdin)
    assert (proc.returncode, proc.stdout) == (0, b"{}\n")
    [call] = stub.calls
    head, _, body = call.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /cni HTTP/1.1\r\n") and b"Connection: close" in head
    assert decode_call(body) == (ENV, stdin)


def test_the_answer_is_read_by_its_length_not_till_the_connection_closes(shim, stub):
    """The agent closes the connection when its loop next gets to it, maybe after other
    work: the shim must not wait for that (here the stub never closes it)."""
    stub.keep_open = True
    proc = run(shim, conf(stub))
    assert (proc.returncode, proc.stdout) == (0, b"{}\n")


@pytest.mark.parametrize("pause", [10, 40])     # in the head, in the body
def test_an_answer_in_pieces_is_read_whole(shim, stub, pause):
    stub.pause = pause
    stub.keep_open = True
    proc = run(shim, conf(stub))
    assert (proc.returncode, proc.stdout) == (0, b"{}\n")


def test_the_agent_s_exit_status_and_output_are_passed_on(shim, stub):
    err = b'{"cniVersion": "1.0.0", "code": 7, "msg": "no", "details": ""}\n'
    stub.answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n1\n%s" % (len(err) + 2, err)
    proc = run(shim, conf(stub))
    assert (proc.returncode, proc.stdout) == (1, err)


def test_a_value_with_cr_lf_goes_to_the_agent_as_it_is(shim, stub):
    env = dict(ENV, CNI_IFNAME="eth\r\n0")
    run(shim, conf(stub), env)
    assert decode_call(stub.calls[0].partition(b"\r\n\r\n")[2])[0]["CNI_IFNAME"] == "eth\r\n0"


@pytest.mark.parametrize("extra", [
    {"plugins": {"agentSocket": "/nowhere", "type": "flannel"}},      # nested: not ours
    {"x": "}\"{\\", "y": [1, {"a": ["]"]}], "z": -1.5e3, "w": None},
    {"type": "overnet-cni", "cniVersion": "9.9.9"},
])
def test_configs_read_plainly_go_to_the_agent(shim, stub, extra):
    proc = run(shim, conf(stub, **extra))
    assert proc.returncode == 0 and len(stub.calls) == 1, proc.stdout


@pytest.mark.parametrize("case", ["flannel", "escaped socket", "escaped key", "relative",
                                  "malformed", "not an object", "socket too long", "empty"])
def test_what_the_shim_hands_to_the_python_plugin(shim, stub, case):
    stdin = {
        "flannel": conf(stub, type="flannel"),
        "escaped socket": conf(stub).replace(b'"/', b'"\\/', 1),
        "escaped key": conf(stub, type="x").replace(b'"type"', b'"typ\\u0065"'),
        "relative": conf(stub, agentSocket="agent.sock"),
        "malformed": conf(stub)[:-1],
        "not an object": b"[1]",
        "socket too long": conf(stub, agentSocket="/" + "a" * 120),
        "empty": b"",
    }[case]
    handed_over(run(shim, stdin))
    assert stub.calls == []


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\n\r\n{\"message\": \"\"}",   # older agent
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n0\n{}\n",      # cut short
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n2\n{}",        # not a status
    b"",                                                          # closed
])
def test_an_answer_that_is_not_the_route_s_is_handed_over(shim, stub, answer):
    stub.answer = answer
    handed_over(run(shim, conf(stub)))
    assert len(stub.calls) == 1


def test_version_missing_command_and_no_agent_are_handed_over(shim, stub, tmp_path):
    handed_over(run(shim, b"", dict(ENV, CNI_COMMAND="VERSION")))
    handed_over(run(shim, conf(stub), {k: v for k, v in ENV.items() if k != "CNI_COMMAND"}))
    err = handed_over(run(shim, conf(stub, agentSocket=str(tmp_path / "none.sock"),
                                     cniVersion="0.4.0")))
    assert err["cniVersion"] == "0.4.0"          # the config's version, as the plugin's errors
    assert stub.calls == []


def test_the_python_plugin_gets_the_same_stdin_and_environment(shim, tmp_path):
    """The hand-over: exec of overnet-cni-python beside the shim, stdin given back whole
    (a config of 200 kB: more than a pipe holds), the environment and exit status as they
    are."""
    here = tmp_path / "bin"
    here.mkdir()
    copy = here / "overnet-cni"
    shutil.copy(shim, copy)
    python = here / "overnet-cni-python"
    python.write_text('#!/bin/sh\ncat\necho "|$CNI_COMMAND|$CNI_IFNAME|$0"\nexit 3\n')
    python.chmod(0o755)
    stdin = json.dumps({"type": "flannel", "pad": "x" * 200_000}).encode()
    proc = run(str(copy), stdin, dict(ENV, CNI_IFNAME="e\r\n0"))
    assert proc.returncode == 3
    assert proc.stdout == stdin + f"|ADD|e\r\n0|{python}\n".encode()
    version = run(str(copy), b"", dict(ENV, CNI_COMMAND="VERSION"))
    assert version.stdout == f"|VERSION|eth0|{python}\n".encode()   # stdin left alone


def test_an_agent_that_does_not_answer_in_time(tmp_path, stub):
    """ADD is not run a second time (in Python) while the agent may still be doing it: the
    runtime is asked to try again; a DEL (idempotent) is handed over."""
    quick = str(tmp_path / "overnet-cni")
    subprocess.run(["cc", "-O2", "-std=c99", "-DTIMEOUT_S=1", "-I", cfront.HERE, "-o", quick,
                    installer.SHIM_SOURCE], check=True, timeout=120)
    stub.answer = None
    proc = run(quick, conf(stub))
    err = json.loads(proc.stdout)
    assert (proc.returncode, err["code"], err["details"]) == (1, 11, stub.path), err
    assert "did not answer in time" in err["msg"]
    handed_over(run(quick, conf(stub), dict(ENV, CNI_COMMAND="DEL")))
    assert len(stub.calls) == 2
