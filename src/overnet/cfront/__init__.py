"""The compiled fronts: small C programs that do one hot call to the agent and hand
everything else to the Python program beside them (cni/shim/overnet_cni.c for `overnet-cni`,
cfront/overnet.c for `overnet`); agent_call.h here is the part they share."""

from __future__ import annotations

import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def compile_c(source: str, out: str) -> tuple[bytes | None, str]:
    """(the program compiled to `out`, "") or (None, why not). Static when libc.a is there:
    no dynamic loader at each start."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) found (Debian: apt-get install gcc libc6-dev)"
    base = [cc, "-O2", "-std=c99", "-I", HERE, "-o", out, source]
    why = ""
    for static in ([True, False] if _has_static_libc(cc) else [False]):
        try:
            proc = subprocess.run(base + (["-static"] if static else []), capture_output=True,
                                  text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"{cc} failed: {e}"
        if proc.returncode == 0:
            with open(out, "rb") as f:
                return f.read(), ""
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
    return None, f"{cc} could not compile {source}: {why}"


def _has_static_libc(cc: str) -> bool:
    try:
        found = subprocess.run([cc, "-print-file-name=libc.a"], capture_output=True, text=True,
                               timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return os.path.isabs(found) and os.path.exists(found)
