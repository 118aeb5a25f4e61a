"""The `overnet` executable, lean: written by scripts/setup.sh over the wrapper pip generates.

pip's console-script wrapper imports `re` (for sys.argv[0]) and runs with site processing:
~9 ms of a ~20 ms `overnet ps`. The Python launcher written here starts the interpreter with
-I -S, puts the package's own directory first on sys.path and calls the same entry point
(cli/fast.py), which turns site processing on only when it hands over to the click CLI (whose
dependencies live in site-packages).

In front of it, when a C compiler is there, goes the compiled front (cfront/overnet.c): it has
the agent run `overnet run -d` and `overnet ps` (api/cliroute.py) without starting Python at
all, and execs the Python launcher, written beside it as `overnet-py`, for everything else.
Without a compiler, `overnet` is the Python launcher itself. Beside them goes the compiled
container reaper (cfront/reaper.c, `overnet-reaper`: runtime/supervise.py execs it, else the
Python one).

    python -m overnet.cli.launcher PATH     # (re)write PATH, e.g. .venv/bin/overnet
"""

from __future__ import annotations

import os
import sys
import tempfile

from .. import cfront
from ..fsutil import package_root, write_atomic

MARK = "overnet's lean launcher"
FALLBACK = "overnet-py"       # the name the front execs (cfront/overnet.c: FALLBACK)
REAPER = "overnet-reaper"     # beside the interpreter: what runtime/supervise.py execs
FRONT_SOURCE = os.path.join(cfront.HERE, "overnet.c")
REAPER_SOURCE = os.path.join(cfront.HERE, "reaper.c")


def script(python: str, root: str) -> str:
    return (f"#!{python} -IS\n"
            f"# {MARK} (python -m overnet.cli.launcher), in place of pip's wrapper\n"
            f"import sys\nsys.path.insert(0, {root!r})\n"
            "from overnet.cli.fast import main\nmain()\n")


def install(path: str) -> str:
    """Write the front at `path`, the Python launcher and the reaper beside it; returns why
    the C parts could not be compiled ("" when they were)."""
    here = os.path.dirname(os.path.abspath(path))
    python = script(sys.executable, package_root())
    write_atomic(os.path.join(here, FALLBACK), python, 0o755)
    with tempfile.TemporaryDirectory(prefix="overnet-front-") as work:
        front, why = cfront.compile_c(FRONT_SOURCE, os.path.join(work, "overnet"))
        reaper, _ = cfront.compile_c(REAPER_SOURCE, os.path.join(work, "reaper"))
    write_atomic(path, front if front is not None else python, 0o755)
    if reaper is not None:
        write_atomic(os.path.join(here, REAPER), reaper, 0o755)
    return why


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m overnet.cli.launcher PATH\n")
        return 2
    why = install(argv[0])
    if why:
        sys.stderr.write(f"overnet: {why}; `overnet` is the Python launcher (run -d and ps "
                         "take ~10 ms more)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
