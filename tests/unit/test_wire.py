"""api/wire.py: JSON through the json module's C accelerator gives exactly what json gives;
one HTTP exchange over a unix socket."""

from __future__ import annotations

import json
import math

import pytest

from overnet.api import wire

VALUES = [
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 1}]},
    [1, -2, 3.25, 1e100, 0, True, False, None, "", "a\"b\\c\n\t\u00e9\u2603\U0001f600"],
    {"nested": {"deep": [[[]], {}], "n": -0.5}, "k\u00e9y": "v"},
    "plain", 42, 3.5, None, [],
]


def test_fast_path_is_in_use():
    assert wire._FAST is not None


@pytest.mark.parametrize("value", VALUES)
def test_same_as_json(value):
    text = wire.dumps(value)
    assert text == json.dumps(value)
    assert wire.loads(text) == value
    assert wire.loads(text.encode()) == value
    assert wire.loads(f" \n\t{json.dumps(value, indent=2)}\r\n ") == value


def test_constants():
    assert math.isnan(wire.loads("NaN")) and wire.loads("[-Infinity]") == [-math.inf]
    assert wire.dumps(math.inf) == "Infinity"


@pytest.mark.parametrize("bad", ["", "   ", "{", '{"a": }', "[1,]", "1 2", '{"a": 1} x',
                                 b"\xff\xfe", "{'a': 1}"])
def test_bad_json_is_value_error(bad):
    with pytest.raises(ValueError):
        wire.loads(bad)


def test_not_serializable():
    with pytest.raises(TypeError, match="set"):
        wire.dumps({"a": {1, 2}})


def test_exchange_unreachable(tmp_path):
    with pytest.raises(FileNotFoundError):
        wire.exchange(str(tmp_path / "none.sock"), 1, "GET", "/", None)


def test_unchunk():
    assert wire._unchunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n") == b"abcde"


@pytest.mark.parametrize("data, whole", [
    (b"", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{", False),
    (b"HTTP/1.1 200 OK\r\ncontent-length:2\r\n\r\n{}", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
])
def test_whole_by_content_length(data, whole):
    assert wire.whole(data) is whole


def test_exchange_does_not_wait_for_the_connection_to_close(tmp_path):
    """The agent closes the connection a loop turn after its answer: the answer is whole
    before that (here the server never closes it)."""
    import socket
    import threading
    path = str(tmp_path / "open.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    held = []

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        held.append(conn)
    threading.Thread(target=serve, daemon=True).start()
    try:
        assert wire.exchange(path, 5, "GET", "/", None) == (200, "OK", b"{}")
    finally:
        srv.close()
        for conn in held:
            conn.close()
