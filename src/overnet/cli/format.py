"""Output formatting: Docker's plain column tables and relative times."""

from __future__ import annotations


def table(headers: list[str], rows: list[list[str]], width: int = 20) -> str:
    """Columns padded to `width` (wider when a cell needs it), like `docker network ls`."""
    widths = [max([width - 1, len(h)] + [len(str(r[i])) for r in rows]) + 1
              for i, h in enumerate(headers)]
    lines = ["".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip()
             for line in [headers, *rows]]
    return "\n".join(lines)


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''}"
    if s < 3600:
        m = s // 60
        return "About a minute" if m == 1 else f"{m} minutes"
    h = s // 3600
    if h < 48:
        return "About an hour" if h == 1 else f"{h} hours"
    return f"{h // 24} days"
