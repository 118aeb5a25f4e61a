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
    """{n, failed, median, min, p95, p99, max, mean}; the numbers are None without samples."""
    data = clean(xs)
    out = {"n": len(data), "failed": len(xs) - len(data)}
    if not data:
        return {**out, "median": None, "min": None, "p95": None, "p99": None, "max": None,
                "mean": None}
    return {**out, "median": median(data), "min": min(data), "p95": percentile(data, 95),
            "p99": percentile(data, 99), "max": max(data), "mean": sum(data) / len(data)}


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
    # Only per-round ratios are independent samples of the ratio; cross pairs are not.
    s["ci"] = ratio_ci(samples) if was_paired else None
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


# --- confidence intervals ---------------------------------------------------------------------

# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (t_{0.975, df}).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t quantile 0.975 for `df` degrees of freedom (table to 30, then the
    Cornish-Fisher expansion around the normal quantile, exact to 3 decimals)."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df} < 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_interval(xs: Sequence[float | None]) -> tuple[float, float, float] | None:
    """(mean, low, high): the 95 % t-interval of the mean; None with fewer than 2 samples."""
    data = clean(xs)
    n = len(data)
    if n < 2:
        return None
    mean = sum(data) / n
    var = sum((x - mean) ** 2 for x in data) / (n - 1)
    half = t975(n - 1) * math.sqrt(var / n)
    return mean, mean - half, mean + half


def ratio_ci(ratios: Sequence[float | None]) -> dict | None:
    """95 % confidence interval of a ratio from its per-round ratios.

    A t-interval on the logarithms (ratios are multiplicative: 0.5 and 2 are equally far
    from 1), so the centre is the geometric mean and the bounds are asymmetric. Returns
    {geomean, low, high, half_width (relative, e.g. 0.03 = ±3 %), n}, or None with fewer
    than 2 positive ratios."""
    logs = [math.log(r) for r in clean(ratios) if r > 0]
    ti = t_interval(logs)
    if ti is None:
        return None
    mean, lo, hi = ti
    return {"geomean": math.exp(mean), "low": math.exp(lo), "high": math.exp(hi),
            "half_width": (math.exp(hi) - math.exp(lo)) / 2 / math.exp(mean), "n": len(logs)}


def bootstrap_ci(xs: Sequence[float | None], stat=None, level: float = 0.95,
                 resamples: int = 2000, seed: int = 1) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `stat` (default: the median); deterministic (fixed
    seed) so a report redrawn from the same samples says the same. None without samples."""
    import random
    data = clean(xs)
    if not data:
        return None
    stat = stat or median
    rng = random.Random(seed)
    n = len(data)
    values = sorted(stat([data[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    tail = (1 - level) / 2 * 100
    return percentile(values, tail), percentile(values, 100 - tail)


def resolves(ci: dict | None, difference: float = 0.05) -> bool:
    """Can an interval tell apart two systems `difference` (relative) apart? Its whole
    width must be below that difference."""
    return ci is not None and (ci["high"] - ci["low"]) / ci["geomean"] < difference
