"""`overnet cni install`: the plugin's executables in the runtimes' CNI bin dir and a network
configuration list in their conf dir. Everything is checked first and written whole (temporary
file, then rename), so a failed install leaves nothing half-written.

`overnet-cni` is the compiled shim (shim/overnet_cni.c: one request to the agent, ~0.1 ms of
its own beyond a process start) when a C compiler is there; `overnet-cni-python` beside it is the
Python plugin it hands the rest to, and `flannel` runs that Python plugin directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from .. import cfront
from ..fsutil import package_root
from .spec import VERSIONS, at_least

DEFAULT_BIN_DIR = "/usr/lib/cni"
EXTRA_BIN_DIR = "/opt/cni/bin"        # containerd's default, used too when it exists
DEFAULT_CONF_DIR = "/etc/cni/net.d"
SHIM = "overnet-cni"
FALLBACK = "overnet-cni-python"     # the name the shim execs (shim/overnet_cni.c: FALLBACK)
PLUGIN_NAMES = (SHIM, "flannel", FALLBACK)
MARK = "written by `overnet cni install`"   # how a later install knows its own files
SHIM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim", "overnet_cni.c")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class InstallError(Exception):
    pass


def default_bin_dirs() -> list[str]:
    return [DEFAULT_BIN_DIR] + ([EXTRA_BIN_DIR] if os.path.isdir(EXTRA_BIN_DIR) else [])


def wrapper(python: str, root: str) -> str:
    """A runtime runs plugins with little or no environment: the interpreter and the package
    are named absolutely, and -I -S skip site processing (faster, and immune to PYTHON*)."""
    return (f"#!{python} -IS\n"
            f"# overnet's CNI plugin, {MARK}: the same entry point\n"
            "# serves the overnet-cni and flannel types (it dispatches on the config's type).\n"
            f"import sys\nsys.path.insert(0, {root!r})\n"
            "from overnet.cni.main import main\nsys.exit(main())\n")


def conflist(network: str, version: str, socket: str | None = None) -> dict:
    plugin: dict = {"type": "overnet-cni", "network": network,
                    "capabilities": {"ips": True, "mac": True, "aliases": True}}
    if socket:
        plugin["agentSocket"] = socket
    return {"cniVersion": version, "name": network,
            "plugins": [plugin, {"type": "portmap", "capabilities": {"portMappings": True}}]}


def check(bin_dirs: list[str], network: str, version: str) -> None:
    if version not in VERSIONS:
        raise InstallError(f"unsupported --cni-version {version!r}: one of {', '.join(VERSIONS)}")
    if not network or network[0] in "-_" or not set(network) <= _NAME_CHARS or len(network) > 63:
        raise InstallError(f"invalid --network {network!r}: 1-63 lowercase letters, digits, "
                           "'-' or '_'")
    for d in bin_dirs:
        if not os.path.isdir(d):
            raise InstallError(f"CNI bin dir {d} does not exist")
        portmap = os.path.join(d, "portmap")
        if not os.access(portmap, os.X_OK):
            raise InstallError(f"{portmap} not found: the conflist chains portmap after "
                               "overnet-cni (Debian: apt-get install containernetworking-plugins)")
        top = _highest_version(portmap)
        if top and not at_least(top, version):
            raise InstallError(f"{portmap} speaks CNI up to {top}, not {version}: "
                               f"use --cni-version {top}")


def _highest_version(plugin: str) -> str | None:
    try:
        out = subprocess.run([plugin], env={"CNI_COMMAND": "VERSION"}, input=b"{}",
                             capture_output=True, timeout=10, check=False).stdout
        known = [v for v in json.loads(out)["supportedVersions"] if v.count(".") == 2]
    except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired):
        return None
    return max(known, key=lambda v: tuple(int(p) for p in v.split(".")), default=None)


def foreign(path: str) -> bool:
    """An executable there that this command did not write (e.g. flannel's own plugin)."""
    try:
        with open(path, "rb") as f:
            content = f.read(16 << 20)    # the compiled shim holds the mark in its data
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return MARK.encode() not in content


def compile_shim(workdir: str, source: str = SHIM_SOURCE) -> tuple[bytes | None, str]:
    """(the compiled shim, "") or (None, why not)."""
    return cfront.compile_c(source, os.path.join(workdir, SHIM))


def plugin_files(bin_dirs: list[str], shim: bytes | None) -> list[tuple[str, str | bytes, int]]:
    script = wrapper(sys.executable, package_root())
    contents: dict[str, str | bytes] = {SHIM: shim or script, "flannel": script,
                                        FALLBACK: script}
    return [(os.path.join(d, n), contents[n], 0o755) for d in bin_dirs for n in PLUGIN_NAMES]


def install(bin_dirs: list[str], conf_dir: str, network: str, version: str,
            socket: str | None = None) -> list[str]:
    """Write every file or none; returns the paths written."""
    check(bin_dirs, network, version)
    for path in (os.path.join(d, n) for d in bin_dirs for n in PLUGIN_NAMES):
        if foreign(path):
            raise InstallError(f"{path} exists and is not overnet's: remove it first, or "
                               "install into another --bin-dir")
    with tempfile.TemporaryDirectory(prefix="overnet-cni-") as workdir:
        shim, why = compile_shim(workdir)
    if shim is None:
        print(f"overnet cni install: {why}; installing the Python plugin as overnet-cni, which "
              "costs ~20-30 ms more per call", file=sys.stderr)
    files = plugin_files(bin_dirs, shim)
    files.append((os.path.join(conf_dir, f"{network}.conflist"),
                  json.dumps(conflist(network, version, socket), indent=2) + "\n", 0o644))
    try:
        os.makedirs(conf_dir, exist_ok=True)
    except OSError as e:
        raise InstallError(f"cannot create CNI conf dir {conf_dir}: {e.strerror}") from None
    return _write_all(files)


def _write_all(files: list[tuple[str, str | bytes, int]]) -> list[str]:
    staged: list[tuple[str, str]] = []
    try:
        for path, content, mode in files:
            tmp = f"{path}.overnet-tmp"
            staged.append((tmp, path))
            with open(tmp, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
            os.chmod(tmp, mode)
    except OSError as e:
        for tmp, _ in staged:
            _unlink(tmp)
        raise InstallError(f"cannot write {e.filename}: {e.strerror}") from None
    for tmp, path in staged:
        os.replace(tmp, path)
    return [path for _, path in staged]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
