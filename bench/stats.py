"""Statistics for the benchmarks: pure functions, no I/O.

Every figure is a list of samples summarised as median with its spread (min, p95). Ratios
compare two figures measured in the same run: when both were sampled in interleaved rounds
(same number of samples, sample i of each taken back to back) the ratio is summarised over
the per-round ratios; otherwise over every cross pair a_i / b_j.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def clean(xs: Sequence[float | None]) -> list[float]:
    """The samples that are numbers (a failed trial is recorded as None)."""
    return [float(x) for x in xs if x is not None and not math.isnan(float(x))]


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (the
    method numpy calls 'linear'). Raises ValueError on no samples."""
    data = sorted(clean(xs))
    if not data:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} out of range 0..100")
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(xs: Sequence[float]) -> float:
    return percentile(xs, 50)


def summarize(xs: Sequence[float | None]) -> dict:
    """{n, failed, median, min, p95, max, mean}; the numbers are None without samples."""
    data = clean(xs)
    out = {"n": len(data), "failed": len(xs) - len(data)}
    if not data:
        return {**out, "median": None, "min": None, "p95": None, "max": None, "mean": None}
    return {**out, "median": median(data), "min": min(data), "p95": percentile(data, 95),
            "max": max(data), "mean": sum(data) / len(data)}


def ratio_samples(num: Sequence[float | None], den: Sequence[float | None],
                  paired: bool | None = None) -> tuple[list[float], bool]:
    """Samples of num/den and whether they are paired per round.

    paired=None: paired when both have the same length. Pairs with a missing or zero
    denominator are dropped."""
    if paired is None:
        paired = len(num) == len(den)
    if paired:
        if len(num) != len(den):
            raise ValueError(f"paired ratio of {len(num)} and {len(den)} samples")
        pairs = zip(num, den)
    else:
        a, b = clean(num), clean(den)
        pairs = ((x, y) for x in a for y in b)
    out = []
    for x, y in pairs:
        if x is None or y is None or y == 0:
            continue
        out.append(float(x) / float(y))
    return out, paired


def ratio_summary(num: Sequence[float | None], den: Sequence[float | None],
                  paired: bool | None = None) -> dict:
    samples, was_paired = ratio_samples(num, den, paired)
    s = summarize(samples)
    s["paired"] = was_paired
    a, b = clean(num), clean(den)
    s["of_medians"] = (median(a) / median(b)) if a and b and median(b) != 0 else None
    return s


def check(value: float | None, op: str, target: float) -> bool | None:
    """Is `value op target`? None when there is no value."""
    if value is None:
        return None
    return OPS[op](value, target)


def rate(delta: float, count: int) -> float | None:
    return delta / count if count else None


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{labels}': value}; comments skipped.

    Labels are kept verbatim, so `etcd_mvcc_put_total` and
    `grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",...}` are distinct keys."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            key, _, rest = line.rpartition("}")
            key += "}"
        else:
            key, _, rest = line.partition(" ")
        fields = rest.split()
        if not fields:
            continue
        try:
            out[key.strip()] = float(fields[0])
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include all of `labels`."""
    total = 0.0
    for key, value in metrics.items():
        base, _, lab = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in lab for k, v in labels.items()):
            total += value
    return total


def metric_delta(before: dict[str, float], after: dict[str, float], name: str,
                 **labels: str) -> float:
    return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)
