"""The agent's small HTTP server and the CLI's client, over a real unix socket."""

import json

import pytest

from overnet.api.client import AgentUnreachable, ApiError, Client, unreachable
from tests.unit.http_helper import exchange, message, serving


@pytest.fixture
def path(tmp_path):
    sock = str(tmp_path / "api.sock")
    with serving(sock):
        yield sock


@pytest.fixture
def server(path):
    return Client("unix://" + path, timeout=5)


def test_round_trips(server):
    assert server.get("/things/a%20b", q="1") == {"name": "a b", "q": "1"}
    assert server.post("/things", {"x": [1, 2]}) == {"x": [1, 2]}


def test_errors_become_messages(server):
    with pytest.raises(ApiError) as e:
        server.get("/things/ghost")
    assert e.value.status == 404 and e.value.message == "no such thing: ghost"
    with pytest.raises(ApiError) as e:
        server.get("/boom")
    assert e.value.status == 500 and "kaput" in e.value.message
    with pytest.raises(ApiError) as e:
        server.get("/nowhere")
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        server.delete("/things")
    assert e.value.status == 405


def test_big_body(server):
    data = {"k": "x" * 300_000}
    assert server.post("/things", data) == data


def test_no_agent(tmp_path):
    with pytest.raises(AgentUnreachable) as e:
        Client(f"unix://{tmp_path}/none.sock").get("/info")
    assert e.value.message == (f"cannot reach the agent at unix://{tmp_path}/none.sock: no such "
                               "socket (is the agent running? Start it with: overnet agent "
                               "--store etcd://HOST:2379 --name NAME --advertise ADDRESS)")


def test_agent_socket_not_ours():
    # What a non-root user gets from the root-only socket (for real: test_containment.py).
    assert unreachable("/run/overnet/overnet.sock", PermissionError(13, "x")) == (
        "cannot reach the agent at unix:///run/overnet/overnet.sock: permission denied "
        "(run as root)")


GOOD = b"GET /things/ok HTTP/1.1\r\nConnection: close\r\n\r\n"


def post(body: bytes, *headers: str) -> bytes:
    head = "".join(h + "\r\n" for h in headers)
    return f"POST /things HTTP/1.1\r\n{head}\r\n".encode() + body


@pytest.mark.parametrize("data, status, text", [
    (post(b"", "Content-Length: -1"), 400, "invalid Content-Length '-1'"),
    (post(b"", "Content-Length: abc"), 400, "invalid Content-Length 'abc'"),
    (post(b"", "Content-Length: 1e3"), 400, "invalid Content-Length"),
    (post(b"{}", "Content-Length: 2", "Content-Length: 2"), 400, "more than one content-length"),
    (post(b"", "Transfer-Encoding: chunked"), 411, "send a Content-Length"),
    (b"GARBAGE\r\n\r\n", 400, "malformed request line 'GARBAGE'"),
    (b"GET things HTTP/1.1\r\n\r\n", 400, "malformed request line"),
    (b"GET /things/a HTTP/2.0\r\n\r\n", 400, "malformed request line"),
    (b"GET /things/a HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed header line"),
    (b"GET /things/a HTTP/1.1\r\n: empty name\r\n\r\n", 400, "malformed header line"),
    (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", 414, "request line longer than"),
    (b"GET /things/a HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n", 431, "header line"),
    (b"GET /things/a HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431, "over the limit"),
    (b"GET /things/a?" + b"a=1&" * 100 + b" HTTP/1.1\r\n\r\n", 400, "malformed query"),
])
def test_bad_requests_get_a_4xx_message(path, data, status, text):
    got, headers, body = exchange(path, data)
    assert got == status and text in message(body)
    assert headers["connection"] == "close"
    assert exchange(path, GOOD)[0] == 200     # and the server answers the next one


def test_bodies_over_1_mib_are_refused_with_413(path):
    big = json.dumps({"k": "x" * (1 << 20)}).encode()
    status, _, body = exchange(path, post(big, f"Content-Length: {len(big)}"))
    assert status == 413 and message(body) == (
        f"request body of {len(big)} bytes is over the limit of 1048576 bytes")
    huge = post(b"", "Content-Length: 999999999999")
    assert exchange(path, huge)[0] == 413


def test_clean_close_when_the_client_stops_midway(path):
    for partial in [b"", b"GET /things/a HT", b"GET /things/a HTTP/1.1\r\nX: y\r\n",
                    post(b"{", "Content-Length: 10")]:
        assert exchange(path, partial) == (None, {}, b"")
    assert exchange(path, GOOD)[0] == 200


def test_expect_100_continue(path):
    status, _, body = exchange(path, post(b"{}", "Content-Length: 2", "Expect: 100-continue"))
    assert status == 100   # the interim answer comes first ...
    assert b"HTTP/1.1 201 Created" in body   # ... then the real one


def test_double_slash_does_not_move_the_route(path):
    assert exchange(path, b"GET //evil/things/a HTTP/1.1\r\n\r\n")[0] == 404


def test_keep_alive_serves_several_requests_on_one_connection(path):
    one = b"GET /things/a HTTP/1.1\r\n\r\n"
    status, _, body = exchange(path, one + one + GOOD)
    assert status == 200 and body.count(b"HTTP/1.1 200 OK") == 2


def test_the_answer_ends_before_the_loop_turns_again(tmp_path):
    """A Connection: close answer ends (EOF) as it is written, not when the loop next gets to
    closing the connection: here the route leaves the loop a callback that blocks until the
    client has seen the end of its answer."""
    import asyncio
    import socket
    import threading

    from overnet.api import http
    seen = threading.Event()
    routes = http.RouteTableDef()

    @routes.get("/busy")
    async def busy(request):
        asyncio.get_running_loop().call_soon(seen.wait, 10)
        return http.Response.json({"ok": True})

    path = str(tmp_path / "busy.sock")
    with serving(path, routes):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET /busy HTTP/1.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):     # socket.timeout here: the end never came
                data += chunk
            seen.set()
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b'{"ok": true}')
