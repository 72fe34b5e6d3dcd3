"""Statistics over seeds (stats.json): mean ± std per arm, the paired gain (distilled − student) with its
t-test and interval, a verdict in words per distilled method, and the best distillation setting.

Headlines are computed on the report split (`report.split`, default `test`): each run's checkpoint was chosen
by its val mIoU, so val numbers are biased upward and are kept only as a labelled side table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from segdistill.atomic import write_json
from segdistill.errors import SegDistillError
from segdistill.report.family import adjust, diff_test, interval_side, method_pairs, ranking
from segdistill.report.family import finite as _finite
from segdistill.report.records import (
    HEADLINE_METRIC,
    HEADLINE_SPLIT,
    MAJORITY,
    METRICS,
    SELECTION_SPLIT,
    metric_columns,
    pts,
    rows_from_evals,
    split_label,
)
from segdistill.report.robustness import power_line, robustness
from segdistill.study import parse_method


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for n=1) and n, over the finite values."""
    v = np.asarray([float(x) for x in values if _finite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan, n


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student t-interval of the mean of the finite values (NaN, NaN for fewer than two)."""
    from scipy import stats as st

    v = np.asarray([float(x) for x in values if _finite(x)], dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    half = float(st.t.ppf(0.5 + confidence / 2, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()) - half, float(v.mean()) + half


def paired_gain(distilled: dict, student: dict, confidence: float = 0.95) -> dict:
    """Gain distilled − student over the seeds both have (with finite values): the mean paired difference, a
    two-sided paired t-test with its p-value and confidence interval (family.diff_test: scipy's t-test on the
    differences, which is scipy.stats.ttest_rel). With n < 2 there is no interval (NaN, shown as "n/a")."""
    seeds = sorted(s for s in set(distilled) & set(student) if _finite(distilled[s]) and _finite(student[s]))
    d = [float(distilled[s]) - float(student[s]) for s in seeds]
    return {"seeds": seeds, **diff_test(d, confidence), "diffs": d}


VERDICT_WORDS = {
    "gain": "a gain",
    "no evidence": "interval includes 0: no evidence of a gain at this sample size",
    "loss": "a loss",
    "undetermined": "one seed has no interval: no verdict (run at least 2 seeds; 5 or more to detect 1-2 points)",
    "no data": "no seed has both a student and a distilled result: no verdict",
}


def verdict(g: dict) -> str:
    """Where the gain's interval lies: above 0 -> gain, below 0 -> loss, across 0 -> no evidence. The interval
    is the family-adjusted one when the gain has it (every headline-metric gain in stats.json does)."""
    if g["n"] == 0:
        return "no data"
    side = interval_side(g.get("adjusted") or g) if g["n"] >= 2 else None
    return {"above": "gain", "below": "loss", "across": "no evidence", None: "undetermined"}[side]


def verdict_sentence(method: str, g: dict, split: str, metric: str = "mIoU") -> str:
    """`kl: +2.10 mIoU points on test (95% CI +0.60 to +3.60, n = 5, p = 0.004): a gain`; with k > 1 arms the
    interval is the simultaneous one and the p-value Holm's: `(simultaneous 95% CI ... for 12 arms, ..., Holm
    p = 0.03)`."""
    kind = verdict(g)
    if kind == "no data":
        return f"{method}: {VERDICT_WORDS[kind]}"
    if kind == "undetermined":
        return f"{method}: {pts(g['mean'])} {metric} points on {split} (n = {g['n']}): {VERDICT_WORDS[kind]}"
    adj = g.get("adjusted") or {}
    k = adj.get("family_size", 1)
    src = adj if k > 1 else g
    conf = round(100 * (1 - k * (1 - src.get("confidence", 0.95))))  # the family's level: 1 − k · (α/k)
    p = src.get("p_value")
    ptxt = f"p = {p:.2g}" if _finite(p) and p >= 0.001 else ("p < 0.001" if _finite(p) else "")
    if k > 1:
        head, ptxt = f"simultaneous {conf}% CI", (f", Holm {ptxt}" if ptxt else "")
        fam = f" for {k} arms"
    else:
        head, ptxt, fam = f"{conf}% CI", (f", {ptxt}" if ptxt else ""), ""
    return (
        f"{method}: {pts(g['mean'])} {metric} points on {split} ({head} {pts(src['ci_low'])} to "
        f"{pts(src['ci_high'])}{fam}, n = {g['n']}{ptxt}): {VERDICT_WORDS[kind]}"
    )


# A run is degenerate when its mIoU is no more than this above predicting the most frequent class everywhere.
DEGENERATE_MARGIN = 0.01  # 1 mIoU point


def degenerate_runs(df, split: str) -> list[dict] | None:
    """The runs on `split` whose mIoU is no more than 1 point above what predicting the split's most frequent class
    everywhere scores (from its labels: segdistill.metrics.majority_miou): the all-background solution and its
    neighbours. They are outcomes like any other and stay in every mean and gain; the report says which they are.
    None when a record holds no label histogram (written before records did)."""
    sub = df[df["split"] == split]
    if MAJORITY not in sub.columns or sub[MAJORITY].isna().any():
        return None
    # In points, rounded to 1e-9: "no more than 1 point" holds at 1 point exactly, whatever the float sums give.
    above = ((sub[HEADLINE_METRIC] - sub[MAJORITY]) * 100).round(9)
    hit = sub[above <= DEGENERATE_MARGIN * 100]
    return [
        {
            "run": r["run"],
            "arm": r["arm"],
            "method": r["method"],
            "seed": int(r["seed"]),
            HEADLINE_METRIC: float(r[HEADLINE_METRIC]),
            MAJORITY: float(r[MAJORITY]),
        }
        for _, r in hit.iterrows()
    ]


def degenerate_note(method: str, degenerate: list[dict] | None, seeds) -> str:
    """`; 2 of its 10 runs degenerate, kept: student seed 9, distilled seeds 7, 9`, or '' when there are none (or
    no histogram to tell): the runs of the verdict's pairs (the students and this method's distilled runs)."""
    if not degenerate:
        return ""
    seeds = set(seeds)
    hits = [d for d in degenerate if d["seed"] in seeds and (d["arm"] == "student" or d["method"] == method)]
    if not hits:
        return ""
    parts = []
    for arm in ("student", "distilled"):
        s = sorted(d["seed"] for d in hits if d["arm"] == arm)
        if s:
            parts.append(f"{arm} seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}")
    return f"; {len(hits)} of its {2 * len(seeds)} runs degenerate, kept: {'; '.join(parts)}"


def arm_table(df, split: str) -> list[dict]:
    """Per arm (teacher, student, one entry per distilled method): n, seeds, mean/std/n of every metric."""
    sub = df[df["split"] == split]
    degenerate = degenerate_runs(df, split)
    out = []
    for (arm, method), g in sub.groupby(["arm", "method"], sort=False):
        entry = {
            "arm": arm,
            "method": method,
            "n": int(len(g)),
            "seeds": sorted(int(s) for s in g["seed"]),
            "degenerate": None
            if degenerate is None
            else sum(d["arm"] == arm and d["method"] == method for d in degenerate),
            "metrics": {},
        }
        for col in metric_columns(df):
            mean, std, n = mean_std(g[col].tolist())
            entry["metrics"][col] = {"mean": mean, "std": std, "n": n}
        out.append(entry)
    return out


def gain_table(df, split: str, metrics=METRICS, confidence: float = 0.95) -> list[dict]:
    """The paired gain of each distilled method over the student, per metric (unadjusted, per comparison)."""
    sub = df[df["split"] == split]
    stu = sub[sub["arm"] == "student"]
    out = []
    for method, g in sub[sub["arm"] == "distilled"].groupby("method", sort=False):
        for metric in metrics:
            if metric not in df.columns:
                continue
            res = paired_gain(
                dict(zip(g["seed"].astype(int), g[metric])), dict(zip(stu["seed"].astype(int), stu[metric])), confidence
            )
            out.append({"method": method, "metric": metric, **res})
    return out


def arm_means(df, split: str, metric: str = HEADLINE_METRIC) -> dict[str, tuple[float, float, int]]:
    """Distilled method -> (mean, std, n) of `metric` on `split`."""
    sub = df[(df["split"] == split) & (df["arm"] == "distilled")]
    return {m: mean_std(g[metric].tolist()) for m, g in sub.groupby("method", sort=False)}


def best_setting(df, split: str = HEADLINE_SPLIT, metric: str = HEADLINE_METRIC) -> dict | None:
    """The distilled method (sweep point or named method) with the highest mean `metric` on the selection
    split (val), reported with its numbers on `split`. Ties go to the name that sorts first, so the choice is
    reproducible. The headline split takes no part: choosing on it would bias the winner's headline upward.
    None when val was not evaluated (`evaluate.splits` without val): then there is nothing to choose on."""
    cands = sorted(
        (-mean, method, std, n) for method, (mean, std, n) in arm_means(df, SELECTION_SPLIT, metric).items() if n
    )
    if not cands:
        return None
    neg, method, std, n = cands[0]
    base, params = parse_method(method)
    head = arm_means(df, split, metric).get(method, (math.nan, math.nan, 0))
    return {
        "method": method,
        "base": base,
        "params": params,
        "metric": metric,
        "chosen_on": SELECTION_SPLIT,
        "selection": {"split": SELECTION_SPLIT, "mean": -neg, "std": std, "n": n},
        "split": split,
        "mean": head[0],
        "std": head[1],
        "n": head[2],
        "candidates": len(cands),
    }


def best_run(df, method: str, split: str = HEADLINE_SPLIT, metric: str = HEADLINE_METRIC) -> dict | None:
    """The run of distilled `method` with the highest `metric` on the selection split (val; ties: the run id
    that sorts first), with its `split` number: the run that is exported."""
    sel = df[(df["split"] == SELECTION_SPLIT) & (df["arm"] == "distilled") & (df["method"] == method)]
    cands = sorted((-float(v), str(r)) for r, v in zip(sel["run"], sel[metric]) if _finite(v))
    if not cands:
        return None
    neg, run = cands[0]
    head = df[(df["split"] == split) & (df["run"] == run)][metric]
    return {
        "run": run,
        "method": method,
        "metric": metric,
        "chosen_on": SELECTION_SPLIT,
        "selection_value": -neg,
        "split": split,
        "value": float(head.iloc[0]) if len(head) else math.nan,
    }


def verdicts(gains: list[dict], split: str, metric: str = HEADLINE_METRIC, degenerate=None) -> list[dict]:
    """One verdict per distilled method on `metric`: {method, verdict, sentence}; the sentence names the
    degenerate runs among its pairs (`degenerate_runs`), which the gain keeps."""
    return [
        {
            "method": g["method"],
            "verdict": verdict(g),
            "sentence": verdict_sentence(g["method"], g, split)
            + degenerate_note(g["method"], degenerate, g.get("seeds", [])),
        }
        for g in gains
        if g["metric"] == metric
    ]


def adjusted_gains(df, split: str, confidence: float = 0.95, metrics=METRICS) -> list[dict]:
    """`gain_table` with the headline metric's gains adjusted as one family (their `adjusted` entry): what the
    verdicts are computed from."""
    gains = gain_table(df, split, metrics, confidence)
    adjust([g for g in gains if g["metric"] == HEADLINE_METRIC], 1 - confidence)
    return gains


def many_arms(df, gains: list[dict], split: str, alpha: float, min_effect: float | None) -> dict:
    """The family of arm-vs-student tests (already adjusted), method-vs-method pairs with a ranking, the
    robustness checks and the power line, all on the headline metric."""
    head = [g for g in gains if g["metric"] == HEADLINE_METRIC]
    k = head[0]["adjusted"]["family_size"] if head else 0
    sub = df[(df["split"] == split) & (df["arm"] == "distilled")]
    per_method = {m: dict(zip(g["seed"].astype(int), g[HEADLINE_METRIC])) for m, g in sub.groupby("method", sort=False)}
    pairs = method_pairs(per_method, alpha) if len(per_method) > 1 else []
    means = {m: v[0] for m, v in arm_means(df, split).items()}
    return {
        "family": {
            "members": k,
            "alpha": alpha,
            "metric": HEADLINE_METRIC,
            "p_adjust": "holm",
            "intervals": "bonferroni",
            "confidence_each": 1 - alpha / max(k, 1),
            "note": "gains[].ci_low/ci_high/p_value are unadjusted (per comparison); gains[].adjusted "
            "holds the family-wise numbers the verdicts use (headline metric only)",
        },
        "pairs": pairs,
        "pairs_family": pairs[0]["adjusted"]["family_size"] if pairs else 0,
        "ranking": ranking(means, pairs) if pairs else [],
        "robustness": robustness(head, alpha),
        "power": [power_line(g, alpha, min_effect) for g in head],
    }


def study_stats(df, split: str = HEADLINE_SPLIT, confidence: float = 0.95, min_effect: float | None = None) -> dict:
    """Headline statistics on `split`; the checkpoint-selection split's arms and gains ride along, labelled.
    `min_effect`: the gain (fraction of mIoU) the power line plans seeds for; None = each arm's observed mean."""
    if split not in set(df["split"]):
        raise SegDistillError(
            f"no evaluation on the '{split}' split in the summary (report.split must be one of evaluate.splits)"
        )
    gains = adjusted_gains(df, split, confidence)
    arms = many_arms(df, gains, split, 1 - confidence, min_effect)
    best = best_setting(df, split)
    out = {
        "split": split,
        "selection_split": SELECTION_SPLIT,
        "biased": split == SELECTION_SPLIT,
        "confidence": confidence,
        "metrics": metric_columns(df),
        "verdicts": verdicts(gains, split, degenerate=degenerate_runs(df, split)),
        "arms": arm_table(df, split),
        "degenerate": {
            "margin": DEGENERATE_MARGIN,
            "rule": "mIoU no more than 1 point above predicting the split's most frequent class everywhere",
            "runs": degenerate_runs(df, split),
        },
        "gains": gains,
        **arms,
        "best_setting": best,
        "best_run": best_run(df, best["method"], split) if best else None,
    }
    if split != SELECTION_SPLIT and SELECTION_SPLIT in set(df["split"]):
        out["selection"] = {
            "split": SELECTION_SPLIT,
            "label": split_label(SELECTION_SPLIT),
            "arms": arm_table(df, SELECTION_SPLIT),
            "gains": gain_table(df, SELECTION_SPLIT, confidence=confidence),
        }
    return out


def _clean(obj):
    """NaN -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj


def stats_json(df, split: str = HEADLINE_SPLIT, confidence: float = 0.95, min_effect: float | None = None) -> dict:
    """`study_stats` as stats.json holds it (NaN -> null). `min_effect` in mIoU points (report.min_effect), as
    the report prints gains; None = each arm's observed mean gain."""
    effect = None if min_effect is None else float(min_effect) / 100
    return _clean(study_stats(df, split, confidence, effect))


def write_stats(
    eval_paths, out_json, split: str = HEADLINE_SPLIT, confidence: float = 0.95, min_effect: float | None = None
) -> dict:
    """stats.json from the per-run evaluation records (full precision, not the rounded CSV)."""
    result = stats_json(rows_from_evals(eval_paths), split, confidence, min_effect)
    write_json(out_json, result, allow_nan=False)
    return result


def load_stats(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SegDistillError(f"{path}: unreadable statistics ({exc})") from None
