"""Small file helpers shared by the agent, the runner and the sandbox."""

from __future__ import annotations

import os


def write_atomic(path: str, content: str | bytes, mode: int | None = None) -> None:
    """Replace `path` with `content` so that readers see the old file or the new one, never
    half of one (write a temporary file beside it, then rename it over)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                 0o644 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
