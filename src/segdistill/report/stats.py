"""Statistics over seeds: mean ± std per arm, and the paired gain (distilled − student) with a t-interval."""

from __future__ import annotations

import math

import numpy as np


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for n=1) and n."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan, n


def paired_gain(distilled: dict, student: dict, confidence: float = 0.95) -> dict:
    """Gain distilled − student over the seeds both have. CI is a two-sided Student t-interval on the paired
    differences; with n < 2 there is no interval (reported as NaN, shown as "n/a")."""
    from scipy import stats

    seeds = sorted(set(distilled) & set(student))
    d = np.asarray([distilled[s] - student[s] for s in seeds], dtype=float)
    n = len(d)
    out = {"n": n, "seeds": seeds, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n == 0:
        return out
    out["mean"] = float(d.mean())
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        out.update(std=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out
