"""Checks beside the paired t-interval, and how many seeds a study needs.

- A paired bootstrap interval of the mean difference (scipy.stats.bootstrap, BCa, a fixed seed so stats.json is
  the same every run) at the same level as the verdict's interval.
- The Wilcoxon signed-rank test (scipy.stats.wilcoxon, two-sided), Holm-adjusted over the arms like the t-test.
  It needs no normality, but with n seeds its smallest two-sided p-value is 2/2^n (0.0078 at n = 8), so it can
  never reject below that.
- A power line from the observed sd of the per-seed differences (statsmodels' TTestPower, the one-sample t-test
  the paired test is): the smallest gain found with 80% power at this n, and the seeds needed for a gain of
  `report.min_effect`. Both are at the family's level α/k, the level the verdicts use.

The per-seed gains of a small study are often nearly two-valued; the t-interval leans on normality there, the
bootstrap has few distinct resamples (BCa cannot be computed for identical values or n < 3), and this is why the
report states every check's verdict and says in words when they disagree.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from segdistill.report.family import finite, holm, interval_side

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 9999
POWER = 0.8
SIDE_WORDS = {"above": "a gain", "below": "a loss", "across": "no evidence", None: "n/a"}


def bootstrap_interval(d, confidence: float) -> dict:
    """BCa interval of the mean of `d`, or the reason there is none."""
    from scipy import stats as st

    d = np.asarray(d, dtype=float)
    out = {
        "method": "BCa",
        "confidence": confidence,
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": BOOTSTRAP_SEED,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "reason": None,
    }
    if len(d) < 3:
        out["reason"] = f"{len(d)} seed(s): BCa needs at least 3"
    elif float(d.std()) == 0.0:
        out["reason"] = "identical differences: nothing to resample"
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = st.bootstrap(
                (d,),
                np.mean,
                method="BCa",
                confidence_level=confidence,
                n_resamples=BOOTSTRAP_RESAMPLES,
                random_state=np.random.default_rng(BOOTSTRAP_SEED),
            )
        degenerate = [w for w in caught if issubclass(w.category, st.DegenerateDataWarning)]
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if degenerate or not (math.isfinite(low) and math.isfinite(high)):
            out["reason"] = "BCa degenerate on these values (too few distinct resamples)"
        else:
            out.update(ci_low=low, ci_high=high)
    return out


def wilcoxon_p(d) -> tuple[float, str | None]:
    """Two-sided signed-rank p-value (zeros dropped, scipy's default), or NaN and why."""
    from scipy import stats as st

    d = np.asarray(d, dtype=float)
    if np.count_nonzero(d) < 1 or len(d) < 2:
        return math.nan, "fewer than 2 seeds or all differences 0"
    return float(st.wilcoxon(d).pvalue), None


def robustness(tests: list[dict], alpha: float) -> list[dict]:
    """Per test of one family (each with `diffs` and `adjusted`): bootstrap interval, Holm-adjusted Wilcoxon
    p-value, each check's verdict and one sentence on whether they agree."""
    wil = [wilcoxon_p(t["diffs"]) for t in tests]
    adj = holm([p for p, _ in wil], alpha)
    out = []
    for t, (p, why), p_adj in zip(tests, wil, adj):
        level = t["adjusted"]["confidence"]
        boot = bootstrap_interval(t["diffs"], level)
        n = len(t["diffs"])
        nonzero = int(np.count_nonzero(t["diffs"]))  # the test drops zero differences
        floor = 2.0 / 2**nonzero if nonzero else math.nan
        if finite(p_adj):
            w_side = ("above" if np.mean(t["diffs"]) > 0 else "below") if p_adj < alpha else "across"
        else:
            w_side = None
        entry = {
            "method": t["method"],
            "n": n,
            "bootstrap": boot,
            "wilcoxon": {"p_value": p, "p_holm": p_adj, "reason": why, "smallest_p": floor, "n_nonzero": nonzero},
            "verdicts": {
                "t": SIDE_WORDS[interval_side(t["adjusted"])],
                "bootstrap": SIDE_WORDS[interval_side(boot)],
                "wilcoxon": SIDE_WORDS[w_side],
            },
        }
        entry["agreement"] = agreement(entry, alpha / max(t["adjusted"]["family_size"], 1))
        out.append(entry)
    return out


def agreement(entry: dict, level_alpha: float) -> str:
    """The checks' verdicts in words: agree, or which says what."""
    v = entry["verdicts"]
    avail = {k: x for k, x in v.items() if x != "n/a"}
    notes = []
    if entry["bootstrap"]["reason"]:
        notes.append(f"no bootstrap interval ({entry['bootstrap']['reason']})")
    floor = entry["wilcoxon"]["smallest_p"]
    if finite(floor) and floor > level_alpha:
        notes.append(
            f"Wilcoxon cannot reach p < {level_alpha:.2g} with {entry['wilcoxon']['n_nonzero']} seeds "
            f"(smallest p {floor:.2g})"
        )
        avail.pop("wilcoxon", None)
    if len(set(avail.values())) <= 1:
        head = "the checks agree" if len(avail) > 1 else "only one check applies"
    else:
        head = (
            "the checks disagree ("
            + "; ".join(f"{k}: {x}" for k, x in avail.items())
            + "): trust the most cautious verdict at this number of seeds"
        )
    return "; ".join([head] + notes)


def _power(es: float, n: float, alpha: float) -> float:
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().power(effect_size=es, nobs=n, alpha=alpha, alternative="two-sided"))


def detectable_effect(n: int, alpha: float, power: float = POWER) -> float:
    """Smallest standardised effect (mean / sd) found with `power` at n seeds: a root of statsmodels' power
    function. Not `solve_power`: its search stops at effect size 10 and silently returns that bound for 2-3
    seeds at α/k. The noncentral t's tail is NaN at some large effects with 1-2 degrees of freedom, so the root
    is bracketed on a log grid of finite values first, then refined by brentq."""
    from scipy.optimize import brentq
    from statsmodels.stats.power import TTestPower

    if n < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's noncentral t warns where it returns NaN
        es = float(
            TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
        )
        if finite(es) and es < 9.9 and abs(_power(es, n, alpha) - power) < 1e-6:
            return es
        grid = np.geomspace(1e-3, 1e4, 141)
        pw = [_power(es, n, alpha) for es in grid]
        hit = next((i for i, p in enumerate(pw) if finite(p) and p >= power), None)
        if hit is None:
            return math.nan
        lo = next((i for i in range(hit - 1, -1, -1) if finite(pw[i])), None)
        if lo is None:
            return float(grid[hit])
        try:
            return float(brentq(lambda es: _power(es, n, alpha) - power, grid[lo], grid[hit], xtol=1e-10))
        except ValueError:  # a NaN inside the bracket: the grid point is within a few percent
            return float(grid[hit])


def seeds_needed(es: float, alpha: float, power: float = POWER) -> int | None:
    """Fewest seeds (at least 2) that find a standardised effect `es` with `power` (statsmodels' solve_power,
    rounded up), or None for es = 0 or when it does not converge."""
    from statsmodels.stats.power import TTestPower

    if not finite(es) or es <= 0:
        return None
    if _power(es, 2, alpha) >= power:
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns and returns NaN when it does not converge
        n = TTestPower().solve_power(effect_size=es, nobs=None, alpha=alpha, power=power, alternative="two-sided")
    n = float(np.asarray(n).reshape(-1)[0])
    return math.ceil(n - 1e-9) if finite(n) and n >= 2 else None


def power_line(t: dict, alpha: float, min_effect: float | None = None) -> dict:
    """For one test (mean, std, n of the per-seed differences; family level α/k from `adjusted`): the
    smallest gain detectable with 80% power and the seeds needed for `min_effect` (fraction; default the
    observed |mean|)."""
    m = max(t["adjusted"]["family_size"], 1)
    a = alpha / m
    sd, n = t["std"], t["n"]
    effect = abs(t["mean"]) if min_effect is None else float(min_effect)
    out = {
        "method": t["method"],
        "n": n,
        "sd": sd,
        "alpha": a,
        "power": POWER,
        "min_effect": effect,
        "min_effect_source": "observed mean" if min_effect is None else "report.min_effect",
        "detectable": math.nan,
        "seeds_needed": None,
        "reason": None,
    }
    if n < 2 or not finite(sd):
        out["reason"] = "fewer than 2 seeds: no spread to plan from"
    elif sd == 0.0:
        out["reason"] = "identical per-seed differences: no spread to plan from"
    else:
        out["detectable"] = detectable_effect(n, a) * sd
        out["seeds_needed"] = seeds_needed(effect / sd if finite(effect) else math.nan, a)
        if out["seeds_needed"] is None:
            out["reason"] = "no seed count found (a gain of 0, or too small for the power solver)"
    return out
