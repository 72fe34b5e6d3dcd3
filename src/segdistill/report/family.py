"""Many arms: one family of comparisons, so that k arms do not give k chances of a false "gain".

Two families on the headline metric, each adjusted on its own:
- every distilled arm against the student (k comparisons; the verdicts come from here);
- every pair of distilled arms against each other (k (k − 1) / 2 comparisons; the method-vs-method table).

p-values: Holm's step-down (statsmodels `multipletests(method="holm")`), which controls the family-wise error
rate under any dependence and rejects at least what Bonferroni rejects. Intervals: Bonferroni, each interval at
level 1 − α/m, so that all m cover their true differences together with probability at least 1 − α whatever the
dependence between them (the arms share the student, so they are correlated). Holm has no interval of its own
that stays informative (the intervals compatible with it only say "> 0" for what it rejects), and Dunnett's
intervals assume independent arms with a common variance, not per-seed paired differences; Bonferroni it is.
An interval above 0 implies a Holm rejection, not the other way round, so the verdicts are the cautious side.
With one comparison nothing is adjusted: level 1 − α and the plain p-value.
"""

from __future__ import annotations

import math

import numpy as np

from segdistill.report.records import pts


def finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and math.isfinite(float(x))


def diff_test(d, confidence: float) -> dict:
    """Mean, sd, two-sided one-sample t-test against 0 and its interval for the differences `d` (the paired
    t-test, scipy.stats.ttest_rel, is this test on the differences). n < 2: no interval (NaN).

    Written out with scipy's t distribution, t = mean / (sd / √n), p = 2 P(T > |t|), mean ± t(1 − α/2) sd / √n,
    rather than `ttest_1samp(...).confidence_interval()`: that call costs milliseconds (array-API dispatch) and
    a sweep's pairs and the Monte Carlo checks make thousands. tests/test_report_many_arms.py checks it against
    ttest_1samp."""
    from scipy.stats import t as t_dist

    d = np.asarray(d, dtype=float)
    n = len(d)
    out = {
        "n": n,
        "mean": math.nan,
        "std": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "p_value": math.nan,
        "confidence": confidence,
    }
    if n == 0:
        return out
    out["mean"] = mean = float(d.mean())
    if n >= 2:
        sd = float(d.std(ddof=1))
        out["std"] = sd
        if sd == 0.0:  # identical differences: the t statistic is infinite (or undefined for a zero mean)
            out.update(ci_low=mean, ci_high=mean, p_value=0.0 if mean else 1.0)
        else:
            se = sd / math.sqrt(n)
            half = float(t_dist.ppf(0.5 + confidence / 2, n - 1)) * se
            out.update(ci_low=mean - half, ci_high=mean + half, p_value=float(2 * t_dist.sf(abs(mean) / se, n - 1)))
    return out


def holm(pvalues, alpha: float) -> list[float]:
    """Holm-adjusted p-values (statsmodels); NaN entries (no test) stay NaN and do not count in the family."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(pvalues) if finite(p)]
    out = [math.nan] * len(pvalues)
    if idx:
        adj = multipletests([float(pvalues[i]) for i in idx], alpha=alpha, method="holm")[1]
        for i, p in zip(idx, adj):
            out[i] = float(p)
    return out


def adjust(tests: list[dict], alpha: float) -> int:
    """Give every test of one family an `adjusted` entry: Holm p-value and the Bonferroni interval at level
    1 − α/m, m = the tests that have a p-value (n ≥ 2). Returns m."""
    ps = holm([t["p_value"] for t in tests], alpha)
    m = sum(finite(p) for p in ps)
    level = 1 - alpha / max(m, 1)
    for t, p in zip(tests, ps):
        ci = diff_test(t["diffs"], level) if finite(p) else {"ci_low": math.nan, "ci_high": math.nan}
        t["adjusted"] = {
            "p_value": p,
            "ci_low": ci["ci_low"],
            "ci_high": ci["ci_high"],
            "confidence": level,
            "family_size": m,
            "p_adjust": "holm",
            "intervals": "bonferroni",
        }
    return m


def interval_side(entry: dict) -> str | None:
    """ "above", "below" or "across" 0 for an interval {ci_low, ci_high}; None when there is none."""
    if not (finite(entry.get("ci_low")) and finite(entry.get("ci_high"))):
        return None
    return "above" if entry["ci_low"] > 0 else ("below" if entry["ci_high"] < 0 else "across")


def method_pairs(per_method: dict[str, dict[int, float]], alpha: float) -> list[dict]:
    """Every pair of distilled arms, `a − b` over the seeds both have (a = the later arm in the given order),
    Holm/Bonferroni-adjusted as one family. `per_method`: method -> {seed: value}."""
    names = list(per_method)
    pairs = []
    for j, a in enumerate(names):
        for b in names[:j]:
            seeds = sorted(
                s
                for s in set(per_method[a]) & set(per_method[b])
                if finite(per_method[a][s]) and finite(per_method[b][s])
            )
            d = [float(per_method[a][s]) - float(per_method[b][s]) for s in seeds]
            pairs.append({"a": a, "b": b, "seeds": seeds, "diffs": d, **diff_test(d, 1 - alpha)})
    adjust(pairs, alpha)
    for p in pairs:
        p["verdict"] = pair_verdict(p)
        p["sentence"] = pair_sentence(p)
    return pairs


PAIR_WORDS = {"across": "no evidence of a difference", None: "fewer than 2 shared seeds: no verdict"}


def pair_verdict(p: dict) -> str:
    side = interval_side(p["adjusted"])
    if side == "above":
        return f"{p['a']} is better"
    if side == "below":
        return f"{p['b']} is better"
    return PAIR_WORDS[side]


def pair_sentence(p: dict, metric: str = "mIoU") -> str:
    """`kl_cwd − kl: +0.80 mIoU points (simultaneous 95% CI -1.20 to +2.80, n = 8, Holm p = 0.41): no evidence
    of a difference`."""
    adj = p["adjusted"]
    if interval_side(adj) is None:
        return f"{p['a']} − {p['b']}: {pts(p['mean'])} {metric} points (n = {p['n']}): {p['verdict']}"
    level = "" if adj["family_size"] == 1 else "simultaneous "
    return (
        f"{p['a']} − {p['b']}: {pts(p['mean'])} {metric} points ({level}95% CI {pts(adj['ci_low'])} to "
        f"{pts(adj['ci_high'])}, n = {p['n']}, Holm p = {adj['p_value']:.2g}): {p['verdict']}"
    )


def ranking(means: dict[str, float], pairs: list[dict]) -> list[dict]:
    """Arms by headline mean (ties: name), each marked whether its adjusted difference to the top arm excludes
    0. A description of the headline split, not a choice: the chosen setting comes from val (stats.py)."""
    order = sorted((m for m in means if finite(means[m])), key=lambda m: (-means[m], m))
    if not order:
        return []
    top = order[0]
    by_pair = {(p["a"], p["b"]): p for p in pairs} | {(p["b"], p["a"]): p for p in pairs}
    out = []
    for rank, m in enumerate(order, 1):
        p = by_pair.get((m, top))
        side = interval_side(p["adjusted"]) if p else None
        status = (
            "top"
            if m == top
            else ("below the top" if side in ("above", "below") else "cannot be separated from the top")
        )
        out.append({"rank": rank, "method": m, "mean": means[m], "status": status})
    return out
