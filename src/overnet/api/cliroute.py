"""POST /cli: the agent's side of the compiled `overnet` front (cfront/overnet.c).

The front sends the command line after its global options, each argument ending in a NUL,
and prints what this route answers: the CLI's start (a Python interpreter, ~10 ms) is spared
for `overnet run -d` and `overnet ps`. The parsing and the output are the CLI's own
(cli/fast.py), and the container is made through the agent's own POST /containers route,
called in-process (the same validation and answer).

Answer (200): "0\\n" then what goes to stdout, "1\\n" then what goes to stderr (the exit
status is the digit), or "-\\n": not a command line taken here (a foreground run, which needs
the caller's terminal; --help; an option the lean parser does not know), nothing done, and
the front hands the line to the Python CLI.
"""

from __future__ import annotations

import logging
import time

from . import http as web
from .client import ApiError
from .local import LocalApi, OnError

log = logging.getLogger(__name__)


async def handle(local: LocalApi, body: bytes) -> bytes:
    from ..cli import fast      # loaded on the first call: the agent starts without the CLI
    argv = [a.decode("utf-8", "surrogateescape") for a in body.split(b"\0")[:-1]]
    try:
        if argv[:1] == ["run"]:
            req = fast.run_request(argv[1:])
            if not req["detach"]:
                raise fast.Fallback          # the container runs in the caller's process
        elif argv[:1] == ["ps"]:
            show_all, quiet = fast.ps_options(argv[1:])
        else:
            raise fast.Fallback
    except fast.Fallback:
        return b"-\n"                        # nothing done: the Python CLI takes the line
    except fast.Fail as e:
        return _error(e)
    # From here on the command may have had an effect: whatever happens is answered, never
    # handed back (the front would run it again in Python).
    try:
        if argv[0] == "run":
            out = (await local.call("POST", "/containers", req))["Id"] + "\n"
        else:
            cs = await local.call("GET", "/containers" + ("?all=1" if show_all else ""))
            text, newline = fast.ps_text(cs, quiet, time.time())
            out = text + ("\n" if newline else "")
    except ApiError as e:
        return _error(e)
    except Exception as e:  # noqa: BLE001 - said to the caller, and logged
        log.exception("POST /cli %s", argv[0])
        return _error(f"the agent failed: {e}")
    return b"0\n" + out.encode("utf-8", "surrogateescape")


def _error(e: object) -> bytes:
    return f"1\nError: {e}\n".encode("utf-8", "surrogateescape")


def add_routes(routes: web.RouteTableDef, on_error: OnError) -> None:
    local = LocalApi(routes, on_error)

    @routes.post("/cli")
    async def cli(request: web.Request) -> web.Response:
        return web.Response(await handle(local, request.body), content_type="text/plain")
