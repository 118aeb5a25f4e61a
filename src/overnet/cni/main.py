"""The `overnet-cni` executable (also installed as `flannel`): read the invocation, dispatch on
the config's `type`, print the result or the spec's error result."""

from __future__ import annotations

import os
import sys

from ..api import wire
from .config import decode
from .env import parse_env
from .spec import INTERNAL, IO_FAILURE, LATEST, VERSIONS, CniError, version_result

ABOUT = "overnet-cni: CNI plugin of overnet (types overnet-cni and flannel)"


def run(environ, stdin: bytes, answer_in: list[str]) -> dict | None:
    """One invocation; `answer_in` receives the cniVersion errors should be reported in."""
    inv = parse_env(environ)
    if inv.command == "VERSION":
        return version_result(_requested_version(stdin))
    conf = decode(stdin)
    if conf.get("cniVersion") in VERSIONS:
        answer_in[0] = conf["cniVersion"]
    if conf.get("type") == "flannel":
        from . import flannel
        return flannel.run(inv, conf)
    from . import plugin
    return plugin.run(inv, conf)


def _requested_version(stdin: bytes) -> str | None:
    try:
        conf = wire.loads(stdin or b"{}")
    except ValueError:
        return None
    return conf.get("cniVersion") if isinstance(conf, dict) else None


def main() -> int:
    answer_in = [LATEST]
    try:
        stdin = b"" if os.environ.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty() \
            else sys.stdin.buffer.read()
        result = run(os.environ, stdin, answer_in)
    except CniError as e:
        if not os.environ.get("CNI_COMMAND"):
            print(f"{ABOUT}\nCNI protocol versions supported: {', '.join(VERSIONS)}",
                  file=sys.stderr)
        sys.stdout.write(e.to_json(answer_in[0]) + "\n")
        return 1
    except OSError as e:
        sys.stdout.write(CniError(IO_FAILURE, f"I/O failure: {e}").to_json(answer_in[0]) + "\n")
        return 1
    except Exception as e:  # noqa: BLE001 - a runtime must get the error JSON, never a traceback
        err = CniError(INTERNAL, f"overnet-cni failed: {type(e).__name__}: {e}",
                       "an unexpected answer or a bug; please report it")
        sys.stdout.write(err.to_json(answer_in[0]) + "\n")
        return 1
    if result is not None:
        sys.stdout.write(wire.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
