"""JSON, and one HTTP/1.1 exchange over a unix socket, without importing json, re, socket or
enum: together they cost ~12 ms of CPU at every start, most of what a CLI command or a CNI
plugin call spends of its own. The C accelerator behind the json module (_json) does the JSON
work with the json module's defaults and output; the json module itself is the fallback when
that accelerator is missing or answers differently."""

from __future__ import annotations

import _socket

_WHITESPACE = " \t\n\r"   # the only whitespace JSON allows
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _ScanContext:
    """The attributes _json.make_scanner reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _not_serializable(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _accelerated() -> tuple | None:
    try:
        import _json
        scan = _json.make_scanner(_ScanContext())
        # no circular check (markers None): what is sent here is never circular
        encode = _json.make_encoder(None, _not_serializable, _json.encode_basestring_ascii,
                                    None, ": ", ", ", False, False, True)
        sample = {"a": [1, 2.5, "\u00e9\n", None, True, {}]}
        text = '{"a": [1, 2.5, "\\u00e9\\n", null, true, {}]}'
        if "".join(encode(sample, 0)) != text or scan(text, 0) != (sample, len(text)):
            return None
        return scan, encode
    except Exception:  # noqa: BLE001 - any surprise means: use the json module
        return None


_FAST = _accelerated()


def loads(data: bytes | str) -> object:
    """json.loads for UTF-8 bytes or text; ValueError on anything that is not one JSON value."""
    if _FAST is None:
        import json
        return json.loads(data)
    text = (data.decode() if isinstance(data, (bytes, bytearray)) else data).strip(_WHITESPACE)
    try:
        value, end = _FAST[0](text, 0)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return value


def dumps(value: object) -> str:
    """json.dumps(value) with its defaults (ASCII, ", " and ": ")."""
    if _FAST is None:
        import json
        return json.dumps(value)
    return "".join(_FAST[1](value, 0))


def exchange(path: str, timeout: float, method: str, target: str, payload: bytes | None
             ) -> tuple[int, str, bytes]:
    """One request, its answer read whole (by its length, else to the end of the connection):
    (status, reason, body).
    Raises OSError (FileNotFoundError, ConnectionError, TimeoutError) as socket would, and
    ValueError when the answer is not HTTP."""
    head = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close",
            f"Content-Length: {len(payload or b'')}"]
    if payload:
        head.append("Content-Type: application/json")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + (payload or b""))
        data = read_message(sock)
    finally:
        sock.close()
    header, _, body = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    _, status, reason = (lines[0].split(" ", 2) + ["", ""])[:3]
    code = int(status)   # ValueError: not HTTP
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return code, reason, body


def read_message(sock: _socket.socket) -> bytes:
    """One HTTP message (an answer, or a request), read until whole or the connection ends."""
    data = b""
    while not whole(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def whole(data: bytes) -> bool:
    """Whether `data` holds a whole HTTP message by its Content-Length (without one: it ends
    when the connection does)."""
    header, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return value.strip().isdigit() and len(body) >= int(value)
    return False


def _unchunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
