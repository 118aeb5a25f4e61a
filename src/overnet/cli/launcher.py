"""The `overnet` executable, lean: written by scripts/setup.sh over the wrapper pip generates.

pip's console-script wrapper imports `re` (for sys.argv[0]) and runs with site processing:
~9 ms of a ~20 ms `overnet ps`. This one starts the interpreter with -I -S, puts the package's
own directory first on sys.path and calls the same entry point (cli/fast.py), which turns site
processing on only when it hands over to the click CLI (whose dependencies live in
site-packages).

    python -m overnet.cli.launcher PATH     # (re)write PATH, e.g. .venv/bin/overnet
"""

from __future__ import annotations

import sys

from ..fsutil import package_root, write_atomic

MARK = "overnet's lean launcher"


def script(python: str, root: str) -> str:
    return (f"#!{python} -IS\n"
            f"# {MARK} (python -m overnet.cli.launcher), in place of pip's wrapper\n"
            f"import sys\nsys.path.insert(0, {root!r})\n"
            "from overnet.cli.fast import main\nmain()\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m overnet.cli.launcher PATH\n")
        return 2
    write_atomic(argv[0], script(sys.executable, package_root()), 0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
