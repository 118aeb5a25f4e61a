"""The `overnet-cni` executable (also installed as `flannel`): read the invocation, dispatch on
the config's `type`, print the result or the spec's error result."""

from __future__ import annotations

import os
import sys

from ..api import wire
from .config import decode
from .env import Invocation, parse_env
from .spec import INTERNAL, IO_FAILURE, LATEST, VERSIONS, CniError, version_result

ABOUT = "overnet-cni: CNI plugin of overnet (types overnet-cni and flannel)"


def prepare(environ, stdin: bytes, answer_in: list[str]) -> tuple[Invocation, dict | None]:
    """The invocation and its config (None for VERSION, which needs none); `answer_in`
    receives the cniVersion errors should be reported in."""
    inv = parse_env(environ)
    if inv.command == "VERSION":
        return inv, None
    conf = decode(stdin)
    if conf.get("cniVersion") in VERSIONS:
        answer_in[0] = conf["cniVersion"]
    return inv, conf


def run(environ, stdin: bytes, answer_in: list[str], client=None) -> dict | None:
    """One invocation. `client` (an overnet.api.client.Client) is how the overnet-cni type
    reaches the agent: its socket by default, the agent's routes in-process when this code
    runs inside the agent (api/cniroute.py)."""
    inv, conf = prepare(environ, stdin, answer_in)
    if conf is None:
        return version_result(_requested_version(stdin))
    if conf.get("type") == "flannel":
        from . import flannel
        return flannel.run(inv, conf)
    from . import plugin
    return plugin.run(inv, conf, client)


def _requested_version(stdin: bytes) -> str | None:
    try:
        conf = wire.loads(stdin or b"{}")
    except ValueError:
        return None
    return conf.get("cniVersion") if isinstance(conf, dict) else None


def error_text(e: BaseException, answer_in: list[str]) -> str:
    """Any failure as the spec's error result: a runtime must get the error JSON, never a
    traceback."""
    if isinstance(e, CniError):
        err = e
    elif isinstance(e, OSError):
        err = CniError(IO_FAILURE, f"I/O failure: {e}")
    else:
        err = CniError(INTERNAL, f"overnet-cni failed: {type(e).__name__}: {e}",
                       "an unexpected answer or a bug; please report it")
    return err.to_json(answer_in[0]) + "\n"


def result_text(result: dict | None) -> str:
    return wire.dumps(result) + "\n" if result is not None else ""


def main() -> int:
    answer_in = [LATEST]
    try:
        stdin = b"" if os.environ.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty() \
            else sys.stdin.buffer.read()
        result = run(os.environ, stdin, answer_in)
    except Exception as e:  # noqa: BLE001 - the error JSON, whatever failed
        if isinstance(e, CniError) and not os.environ.get("CNI_COMMAND"):
            print(f"{ABOUT}\nCNI protocol versions supported: {', '.join(VERSIONS)}",
                  file=sys.stderr)
        sys.stdout.write(error_text(e, answer_in))
        return 1
    sys.stdout.write(result_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
