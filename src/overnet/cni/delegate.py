"""Running another CNI plugin found in CNI_PATH, as libcni's invoke package does."""

from __future__ import annotations

import os

from ..api import wire
from .env import Invocation
from .spec import INTERNAL, INVALID_CONFIG, INVALID_ENVIRONMENT, CniError


def find(plugin_type: str, path: list[str]) -> str:
    if not path:
        raise CniError(INVALID_ENVIRONMENT, "required env variables [CNI_PATH] missing",
                       f"needed to find the delegate plugin {plugin_type!r}")
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        raise CniError(INVALID_CONFIG, f"invalid delegate type {plugin_type!r}")
    for directory in path:
        exe = os.path.join(directory, plugin_type)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    raise CniError(INVALID_CONFIG, f"failed to find plugin {plugin_type!r} in CNI_PATH",
                   f"searched {':'.join(path)}")


def invoke(inv: Invocation, command: str, conf: bytes) -> dict | None:
    """Run the delegate named by the config's type with CNI_COMMAND=`command`; its result, or
    its own error passed up unchanged."""
    import subprocess  # only the flannel type delegates: keep it off overnet-cni's path

    plugin_type = wire.loads(conf)["type"]
    exe = find(plugin_type, inv.path)
    env = dict(inv.environ, CNI_COMMAND=command)
    proc = subprocess.run([exe], input=conf, env=env, capture_output=True, timeout=120,
                          check=False)
    if proc.returncode != 0:
        raise _error(plugin_type, proc.stdout, proc.stderr)
    out = proc.stdout.strip()
    if not out:
        return None
    try:
        return wire.loads(out)
    except ValueError:
        raise CniError(INTERNAL, f"delegate {plugin_type} printed a result that is not JSON",
                       out.decode(errors="replace")[:500]) from None


def _error(plugin_type: str, stdout: bytes, stderr: bytes) -> CniError:
    try:
        err = wire.loads(stdout)
        return CniError(int(err["code"]), f"{plugin_type}: {err.get('msg', '')}",
                        str(err.get("details", "")))
    except (ValueError, KeyError, TypeError):
        text = (stdout or stderr).decode(errors="replace").strip()
        return CniError(INTERNAL, f"delegate {plugin_type} failed", text[:500])
