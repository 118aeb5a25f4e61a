"""Results of one bench run: figures, ratios, targets; JSON, Markdown and the PNG chart.

Nothing here measures: every number comes from the samples the benchmarks add.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from . import stats

BENCHES = ("throughput", "convergence", "setup", "scale", "control")
RATIO_HEADER = ["bench", "ratio", "median", "min", "p95", "95% CI", "target", "met"]


@dataclass
class Results:
    command: str = ""
    meta: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    ratios: list = field(default_factory=list)
    absolute: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    ran: list = field(default_factory=list)

    # --- adding -------------------------------------------------------------------------------

    def add_figure(self, fid: str, bench: str, label: str, unit: str,
                   samples: list, note: str = "") -> dict:
        fig = {"id": fid, "bench": bench, "label": label, "unit": unit,
               "samples": [None if s is None else float(s) for s in samples],
               "summary": stats.summarize(samples)}
        if note:
            fig["note"] = note
        self.figures[fid] = fig
        return fig

    def add_ratio(self, rid: str, bench: str, label: str, num: str, den: str,
                  op: str | None = None, target: float | None = None,
                  paired: bool | None = None, ceiling: str | None = None) -> dict | None:
        """num/den of two figures already added; None (and nothing added) if one is missing.
        `ceiling`: the id of a ratio that bounds this one (the best any path can do against
        the same reference), named when the target is missed."""
        a, b = self.figures.get(num), self.figures.get(den)
        if a is None or b is None or not stats.clean(a["samples"]) \
                or not stats.clean(b["samples"]):
            return None
        s = stats.ratio_summary(a["samples"], b["samples"], paired)
        r = {"id": rid, "bench": bench, "label": label, "num": num, "den": den, "summary": s,
             "target": {"op": op, "value": target} if op else None,
             "met": stats.check(s["median"], op, target) if op else None}
        if ceiling:
            r["ceiling"] = ceiling
        self.ratios.append(r)
        return r

    def add_absolute(self, aid: str, bench: str, label: str, figure: str, stat: str,
                     op: str, target: float) -> dict | None:
        """A target on one statistic (median, p95, max...) of a figure."""
        fig = self.figures.get(figure)
        if fig is None:
            return None
        value = fig["summary"].get(stat)
        a = {"id": aid, "bench": bench, "label": label, "figure": figure, "stat": stat,
             "value": value, "unit": fig["unit"], "target": {"op": op, "value": target},
             "met": stats.check(value, op, target)}
        self.absolute.append(a)
        return a

    def skip(self, bench: str, what: str, reason: str) -> None:
        self.skipped.append({"bench": bench, "what": what, "reason": reason})

    def note(self, bench: str, text: str) -> None:
        self.notes.append({"bench": bench, "text": text})

    # --- output -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"command": self.command, "meta": self.meta, "ran": self.ran,
                "figures": list(self.figures.values()), "ratios": self.ratios,
                "absolute": self.absolute, "skipped": self.skipped, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict) -> "Results":
        r = cls(command=d.get("command", ""), meta=d.get("meta", {}), ran=d.get("ran", []),
                ratios=d.get("ratios", []), absolute=d.get("absolute", []),
                skipped=d.get("skipped", []), notes=d.get("notes", []))
        r.figures = {f["id"]: f for f in d.get("figures", [])}
        return r

    def write(self, out_dir: str, stem: str, chart: bool = True) -> dict[str, str]:
        """<stem>.json, <stem>.md, <stem>.png (if any ratio and matplotlib is there)."""
        os.makedirs(out_dir, exist_ok=True)
        paths = {"json": os.path.join(out_dir, stem + ".json"),
                 "md": os.path.join(out_dir, stem + ".md")}
        _write(paths["json"], json.dumps(self.to_dict(), indent=1) + "\n")
        _write(paths["md"], markdown(self))
        if chart and self.ratios:
            png = os.path.join(out_dir, stem + ".png")
            err = draw_chart(self, png)
            if err is None:
                paths["png"] = png
            else:
                self.note("report", f"no chart: {err}")
        return paths


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --- formatting ------------------------------------------------------------------------------

def fmt(value: float | None, unit: str = "") -> str:
    """A number the way the tables show it: 3 significant digits, unit-aware."""
    if value is None:
        return "–"
    if unit in ("", "x"):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if unit == "ms":
        return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    if unit == "Gbit/s":
        return f"{value:.2f}"
    if unit in ("MB",):
        return f"{value:.1f}"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"


def fmt_target(t: dict | None, unit: str = "") -> str:
    if not t:
        return ""
    u = "" if unit in ("", "x") else f" {unit}"
    return f"{t['op']} {fmt(t['value'], unit)}{u}"


def fmt_ci(ci: dict | None) -> str:
    """A ratio's 95 % interval as `[low, high] ±h %`; empty when there is none."""
    if not ci:
        return ""
    return f"[{ci['low']:.3f}, {ci['high']:.3f}] ±{100 * ci['half_width']:.1f}%"


def fmt_met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[met]


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def ratio_rows(res: Results) -> list[list[str]]:
    rows = []
    for r in res.ratios:
        s = r["summary"]
        rows.append([r["bench"], r["label"], fmt(s["median"]) + "×", fmt(s["min"]),
                     fmt(s["p95"]), fmt_ci(s.get("ci")), fmt_target(r["target"]),
                     fmt_met(r["met"])])
    return rows


def missed_lines(res: Results) -> list[str]:
    """One line per ratio target missed: whether this run resolves the miss (its 95 % interval
    excludes the target) and, when the benchmark names one, the ceiling against the same
    reference in the same run."""
    by_id = {r["id"]: r for r in res.ratios}
    lines = []
    for r in res.ratios:
        if r["met"] is not False:
            continue
        s, t = r["summary"], r["target"]
        line = f"- {r['label']}: {fmt(s['median'])}×, target {fmt_target(t)}"
        ci = s.get("ci")
        if ci:
            inside = ci["low"] <= t["value"] <= ci["high"]
            line += (f"; its 95 % interval [{ci['low']:.3f}, {ci['high']:.3f}] "
                     + ("includes the target: this run does not tell it from the target"
                        if inside else "excludes the target: missed"))
        top = by_id.get(r.get("ceiling", ""))
        if top is not None:
            line += (f"; the ceiling, {top['label']}, was {fmt(top['summary']['median'])}× "
                     "in the same run")
        lines.append(line + ".")
    return lines


def absolute_rows(res: Results) -> list[list[str]]:
    rows = []
    for a in res.absolute:
        rows.append([a["bench"], a["label"], f"{fmt(a['value'], a['unit'])} {a['unit']}",
                     fmt_target(a["target"], a["unit"]), fmt_met(a["met"])])
    return rows


def figure_rows(res: Results) -> list[list[str]]:
    rows = []
    for f in res.figures.values():
        s, u = f["summary"], f["unit"]
        n = str(s["n"]) + (f" ({s['failed']} failed)" if s["failed"] else "")
        rows.append([f["bench"], f["label"], u, fmt(s["median"], u), fmt(s["min"], u),
                     fmt(s["p95"], u), n])
    return rows


def markdown(res: Results, title: bool = True) -> str:
    parts = []
    if title:
        parts.append("# overnet bench results\n")
    if res.command:
        parts.append(f"Command: `{res.command}`  ")
    m = res.meta
    if m:
        parts.append(f"Run {m.get('date', '')} on {m.get('machine', '')}; "
                     f"{m.get('duration_s', 0):.0f} s.\n")
    if res.ratios:
        parts.append("Ratios (median of per-round ratios, spread min and p95; 95 % CI: "
                     "t-interval of the per-round ratios' logarithms, around their geometric "
                     "mean):\n")
        parts.append(table(RATIO_HEADER,
                           ratio_rows(res)) + "\n")
    if missed_lines(res):
        parts.append("Ratio targets missed:\n")
        parts += missed_lines(res) + [""]
    if res.absolute:
        parts.append("Absolute targets:\n")
        parts.append(table(["bench", "figure", "value", "target", "met"],
                           absolute_rows(res)) + "\n")
    if res.figures:
        parts.append("Every figure (median, min, p95 over n runs):\n")
        parts.append(table(["bench", "figure", "unit", "median", "min", "p95", "n"],
                           figure_rows(res)) + "\n")
    if res.skipped:
        parts.append("Skipped:\n")
        parts += [f"- {s['bench']}: {s['what']}: skipped: {s['reason']}" for s in res.skipped]
        parts.append("")
    if res.notes:
        parts.append("Notes:\n")
        parts += [f"- {n['bench']}: {n['text']}" for n in res.notes]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def summary_text(res: Results) -> str:
    """What the command prints at the end: the ratio and target tables, then skips."""
    lines = []
    if res.ratios:
        lines.append(table(RATIO_HEADER,
                           ratio_rows(res)))
    if res.absolute:
        lines.append("")
        lines.append(table(["bench", "figure", "value", "target", "met"], absolute_rows(res)))
    for s in res.skipped:
        lines.append(f"{s['bench']}: {s['what']}: skipped: {s['reason']}")
    return "\n".join(lines) + "\n"


def readme_section(res: Results, chart_path: str | None, control: Results | None = None,
                   control_chart: str | None = None) -> str:
    parts = ["## Performance", "",
             "Measured on one machine with the sandbox's namespace hosts, every figure against a "
             "reference run in the same invocation (the underlay, Docker 20.10's overlay on the "
             "same kind of two-host lab, the reference CNI `bridge` plugin, a bare kernel VXLAN "
             "device). Ratios are medians of per-round ratios with their spread (min, p95) and "
             "a 95 % confidence interval; see `bench/README.md` for what each number is.", "",
             "```sh", "sudo bash scripts/setup.sh --bench && sudo bash bench/setup.sh",
             f"sudo {res.command}" if res.command and not res.command.startswith("sudo")
             else res.command, "```", ""]
    m = res.meta
    if m:
        commit = f" at commit {m['commit']}" if m.get("commit") else ""
        parts += [f"Last run{commit}: {m.get('date', '')}, {m.get('machine', '')}, "
                  f"{m.get('duration_s', 0):.0f} s.", ""]
    if chart_path:
        parts += [f"![ratios]({chart_path})", ""]
    if res.ratios:
        parts += [table(RATIO_HEADER,
                        ratio_rows(res)), ""]
    if missed_lines(res):
        parts += ["Ratio targets missed:", ""] + missed_lines(res) + [""]
    if res.absolute:
        parts += [table(["bench", "figure", "value", "target", "met"], absolute_rows(res)), ""]
    for s in res.skipped:
        parts.append(f"- {s['bench']}: {s['what']}: skipped: {s['reason']}")
    if res.skipped:
        parts.append("")
    if control is not None:
        from .control_report import control_part     # it reads this module's table()
        parts += control_part(control, control_chart, table)
    parts.append("Every figure with its spread: `bench/results/latest.md`; raw samples: "
                 "`bench/results/latest.json`.")
    return "\n".join(parts) + "\n"


# --- chart ------------------------------------------------------------------------------------

def draw_chart(res: Results, path: str) -> str | None:
    """A horizontal bar per ratio (median) with min..p95 whiskers and the target marked.
    Returns None, or why there is no chart."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (bash scripts/setup.sh --bench)"
    rows = [r for r in res.ratios if r["summary"]["median"] is not None]
    if not rows:
        return "no ratio to draw"
    rows = rows[::-1]
    labels = [f"{r['bench']}: {r['label']}" for r in rows]
    med = [r["summary"]["median"] for r in rows]
    lo = [max(0.0, r["summary"]["median"] - r["summary"]["min"]) for r in rows]
    hi = [max(0.0, r["summary"]["p95"] - r["summary"]["median"]) for r in rows]
    colors = ["#4c9a2a" if r["met"] else "#c0392b" if r["met"] is False else "#7f8c8d"
              for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.6))
    y = range(len(rows))
    ax.barh(y, med, xerr=[lo, hi], color=colors, alpha=0.85, capsize=3,
            error_kw={"elinewidth": 1, "ecolor": "#333"})
    for i, r in enumerate(rows):
        if r["target"]:
            ax.plot([r["target"]["value"]] * 2, [i - 0.4, i + 0.4], color="black", lw=2)
        right = max(r["summary"]["p95"], r["target"]["value"] if r["target"] else 0)
        ax.text(right + 0.01 * max(1.0, max(med)), i,
                f" {r['summary']['median']:.2f}×", va="center", fontsize=8)
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(1.0, color="#999", lw=0.8, ls="--")
    ax.set_xlabel("ratio (bar: median; whiskers: min..p95; black tick: target; "
                  "green met, red missed, grey no target)", fontsize=8)
    m = res.meta
    ax.set_title(f"overnet bench ratios — {m.get('date', time.strftime('%Y-%m-%d'))}\n"
                 f"{m.get('machine', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
