"""POST /cni: the agent's side of the compiled `overnet-cni` (cni/shim/overnet_cni.c).

The shim sends a whole CNI call in one request and prints what this route answers, so the
plugin's process costs a process start (~1 ms) instead of a Python start (~20-30 ms). The
plugin logic is the Python plugin's own (cni/main.py, cni/plugin.py), run here:

- ADD on the event loop, its attach through the agent's own POST /endpoints route called
  in-process (the same validation and answer, no socket, no second HTTP parse);
- the rarer verbs (DEL, CHECK, GC, STATUS) in a worker thread, their requests to the agent
  answered in-process on the loop (`local.LoopClient`).

Request body: the CNI_* variables as "NAME=value\\0" each, an empty one ("\\0") to end them,
then the network config as the runtime gave it. Answer (200): "0\\n" or "1\\n", the plugin's
exit status, then what goes to its stdout: the result or the spec's error JSON.
"""

from __future__ import annotations

import asyncio

from ..cni import main as plugin_main
from ..cni import pending, plugin
from ..cni.config import OvernetConf
from ..cni.spec import INVALID_ENVIRONMENT, LATEST, CniError
from . import http as web
from .client import ApiError
from .local import LocalApi, OnError

# The variables the shim passes on (what parse_env reads).
CNI_VARIABLES = frozenset(("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
                           "CNI_ARGS", "CNI_PATH"))



def encode_call(environ: dict[str, str], conf: bytes) -> bytes:
    """What the shim sends (its build_body): for tests and the benchmark's direct calls."""
    return b"".join(f"{k}={v}".encode("utf-8", "surrogateescape") + b"\0"
                    for k, v in environ.items()) + b"\0" + conf


def decode_call(body: bytes) -> tuple[dict[str, str], bytes]:
    """The request body -> (CNI_* environment, network config bytes). A framing the shim
    would not send is an INVALID_ENVIRONMENT error naming what is wrong."""
    environ: dict[str, str] = {}
    pos = 0
    while (end := body.find(b"\0", pos)) != pos:
        if end < 0:
            raise CniError(INVALID_ENVIRONMENT, "malformed overnet-cni call: the CNI_* "
                           "variables do not end with an empty entry")
        name, sep, value = body[pos:end].partition(b"=")
        key = name.decode("latin-1")
        if not sep or key not in CNI_VARIABLES:
            raise CniError(INVALID_ENVIRONMENT, f"malformed overnet-cni call: unexpected "
                           f"variable {_show(body[pos:end])}", "expected NAME=value with NAME "
                           f"one of {', '.join(sorted(CNI_VARIABLES))}")
        # as os.environ decodes the environment: bytes that are not UTF-8 stay as they were
        environ[key] = value.decode("utf-8", "surrogateescape")
        pos = end + 1
    return environ, body[pos + 1:]


def _show(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def encode_answer(status: int, text: str) -> bytes:
    return f"{status}\n{text}".encode()


async def handle(local: LocalApi, body: bytes) -> tuple[int, str]:
    """One CNI call -> (exit status, stdout), as the Python plugin would give them."""
    answer_in = [LATEST]
    try:
        environ, stdin = decode_call(body)
        if environ.get("CNI_COMMAND") == "ADD":
            result = await add(local, environ, stdin, answer_in)
        else:
            result = await asyncio.to_thread(plugin_main.run, environ, stdin, answer_in,
                                             local.client())
    except Exception as e:  # noqa: BLE001 - the error JSON, as the plugin's main gives it
        return 1, plugin_main.error_text(e, answer_in)
    return 0, plugin_main.result_text(result)


async def add(local: LocalApi, environ: dict[str, str], stdin: bytes,
              answer_in: list[str]) -> dict | None:
    """plugin.cmd_add on the loop: the attach is the agent's own, awaited in place."""
    inv, raw = plugin_main.prepare(environ, stdin, answer_in)
    if raw is None or raw.get("type") == "flannel":    # not the shim's: run it as the plugin
        return await asyncio.to_thread(plugin_main.run, environ, stdin, answer_in,
                                       local.client())
    conf = OvernetConf(raw)
    if _pending(conf.pending_dir):     # rare: DELs kept while the agent was away
        await asyncio.to_thread(plugin.flush, local.client(), conf)
    try:
        endpoint = await local.call("POST", "/endpoints", plugin.attach_request(inv, conf))
    except ApiError as e:
        raise plugin.add_error(inv, conf, e) from None
    return plugin.add_answer(inv, conf, endpoint)


def _pending(directory: str) -> bool:
    try:
        return bool(pending.entries(directory))
    except OSError:
        return True     # plugin.flush says why it cannot read them


def add_routes(routes: web.RouteTableDef, on_error: OnError) -> None:
    local = LocalApi(routes, on_error)

    @routes.post("/cni")
    async def cni(request: web.Request) -> web.Response:
        status, text = await handle(local, request.body)
        return web.Response(encode_answer(status, text), content_type="text/plain")
