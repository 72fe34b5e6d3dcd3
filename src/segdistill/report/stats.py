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
from segdistill.report.records import SELECTION_SPLIT, metric_columns, pts, rows_from_evals, split_label


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and math.isfinite(float(x))


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
    two-sided paired t-test (scipy.stats.ttest_rel) with its p-value and confidence interval. With n < 2 there
    is no interval (NaN, shown as "n/a")."""
    from scipy import stats as st

    seeds = sorted(s for s in set(distilled) & set(student) if _finite(distilled[s]) and _finite(student[s]))
    dv = np.asarray([float(distilled[s]) for s in seeds])
    sv = np.asarray([float(student[s]) for s in seeds])
    d = dv - sv
    n = len(d)
    out = {"n": n, "seeds": seeds, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "p_value": math.nan, "confidence": confidence, "diffs": [float(x) for x in d]}
    if n == 0:
        return out
    out["mean"] = float(d.mean())
    if n >= 2:
        sd = float(d.std(ddof=1))
        out["std"] = sd
        if sd == 0.0:  # identical differences: the t statistic is infinite (or undefined for a zero mean)
            out.update(ci_low=out["mean"], ci_high=out["mean"], p_value=0.0 if out["mean"] else 1.0)
        else:
            res = st.ttest_rel(dv, sv)
            ci = res.confidence_interval(confidence)
            out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(res.pvalue))
    return out


VERDICT_WORDS = {
    "gain": "a gain",
    "no evidence": "interval includes 0: no evidence of a gain at this sample size",
    "loss": "a loss",
    "undetermined": "one seed has no interval: no verdict (run at least 2 seeds; 5 or more to detect 1-2 points)",
    "no data": "no seed has both a student and a distilled result: no verdict",
}


def verdict(g: dict) -> str:
    """Where the gain's interval lies: above 0 -> gain, below 0 -> loss, across 0 -> no evidence."""
    if g["n"] == 0:
        return "no data"
    if g["n"] < 2 or not (_finite(g.get("ci_low")) and _finite(g.get("ci_high"))):
        return "undetermined"
    if g["ci_low"] > 0:
        return "gain"
    if g["ci_high"] < 0:
        return "loss"
    return "no evidence"


def verdict_sentence(method: str, g: dict, split: str, metric: str = "mIoU") -> str:
    """`kl: +2.10 mIoU points on test (95% CI +0.60 to +3.60, n = 5, p = 0.004): a gain`."""
    kind = verdict(g)
    if kind == "no data":
        return f"{method}: {VERDICT_WORDS[kind]}"
    if kind == "undetermined":
        return f"{method}: {pts(g['mean'])} {metric} points on {split} (n = {g['n']}): {VERDICT_WORDS[kind]}"
    conf = round(100 * g.get("confidence", 0.95))
    p = g.get("p_value")
    ptxt = f", p = {p:.2g}" if _finite(p) and p >= 0.001 else (", p < 0.001" if _finite(p) else "")
    return (f"{method}: {pts(g['mean'])} {metric} points on {split} ({conf}% CI {pts(g['ci_low'])} to "
            f"{pts(g['ci_high'])}, n = {g['n']}{ptxt}): {VERDICT_WORDS[kind]}")


def parse_method(name: str) -> tuple[str, dict]:
    """`kl_cwd~weight=2~cwd.temperature=4` -> ("kl_cwd", {"weight": 2.0, "cwd.temperature": 4.0})."""
    base, *points = name.split("~")
    params = {}
    for p in points:
        key, sep, value = p.partition("=")
        if not sep:
            raise SegDistillError(f"sweep arm name '{name}': '{p}' is not key=value")
        try:
            params[key] = float(value)
        except ValueError:
            params[key] = value
    return base, params


def arm_table(df, split: str) -> list[dict]:
    """Per arm (teacher, student, one entry per distilled method): n, seeds, mean/std/n of every metric."""
    sub = df[df["split"] == split]
    out = []
    for (arm, method), g in sub.groupby(["arm", "method"], sort=False):
        entry = {"arm": arm, "method": method, "n": int(len(g)), "seeds": sorted(int(s) for s in g["seed"]),
                 "metrics": {}}
        for col in metric_columns(df):
            mean, std, n = mean_std(g[col].tolist())
            entry["metrics"][col] = {"mean": mean, "std": std, "n": n}
        out.append(entry)
    return out


def gain_table(df, split: str, metrics=("miou", "acc", "kappa", "dice"), confidence: float = 0.95) -> list[dict]:
    """The paired gain of each distilled method over the student, per metric."""
    sub = df[df["split"] == split]
    stu = sub[sub["arm"] == "student"]
    out = []
    for method, g in sub[sub["arm"] == "distilled"].groupby("method", sort=False):
        for metric in metrics:
            if metric not in df.columns:
                continue
            res = paired_gain(dict(zip(g["seed"].astype(int), g[metric])),
                              dict(zip(stu["seed"].astype(int), stu[metric])), confidence)
            out.append({"method": method, "metric": metric, **res})
    return out


def best_setting(df, split: str = "test", metric: str = "miou") -> dict | None:
    """The distilled method (sweep point or named method) with the highest mean `metric`; ties go to the name
    that sorts first, so the choice is reproducible."""
    sub = df[(df["split"] == split) & (df["arm"] == "distilled")]
    cands = []
    for method, g in sub.groupby("method"):
        mean, std, n = mean_std(g[metric].tolist())
        if n:
            cands.append((-mean, method, std, n))
    if not cands:
        return None
    neg, method, std, n = min(cands)
    base, params = parse_method(method)
    return {"method": method, "base": base, "params": params, "metric": metric, "mean": -neg, "std": std, "n": n,
            "candidates": len(cands)}


def best_run(df, split: str = "test", metric: str = "miou") -> dict | None:
    """The single distilled run with the highest `metric` (ties: the run id that sorts first)."""
    sub = df[(df["split"] == split) & (df["arm"] == "distilled")]
    cands = [(-float(v), str(r)) for r, v in zip(sub["run"], sub[metric]) if _finite(v)]
    if not cands:
        return None
    neg, run = min(cands)
    return {"run": run, "metric": metric, "value": -neg}


def verdicts(gains: list[dict], split: str, metric: str = "miou") -> list[dict]:
    """One verdict per distilled method on `metric`: {method, verdict, sentence}."""
    return [{"method": g["method"], "verdict": verdict(g), "sentence": verdict_sentence(g["method"], g, split)}
            for g in gains if g["metric"] == metric]


def study_stats(df, split: str = "test", confidence: float = 0.95) -> dict:
    """Headline statistics on `split`; the checkpoint-selection split's arms and gains ride along, labelled."""
    if split not in set(df["split"]):
        raise SegDistillError(
            f"no evaluation on the '{split}' split in the summary (report.split must be one of evaluate.splits)"
        )
    gains = gain_table(df, split, confidence=confidence)
    out = {
        "split": split,
        "selection_split": SELECTION_SPLIT,
        "biased": split == SELECTION_SPLIT,
        "confidence": confidence,
        "metrics": metric_columns(df),
        "verdicts": verdicts(gains, split),
        "arms": arm_table(df, split),
        "gains": gains,
        "best_setting": best_setting(df, split),
        "best_run": best_run(df, split),
    }
    if split != SELECTION_SPLIT and SELECTION_SPLIT in set(df["split"]):
        out["selection"] = {"split": SELECTION_SPLIT, "label": split_label(SELECTION_SPLIT),
                            "arms": arm_table(df, SELECTION_SPLIT),
                            "gains": gain_table(df, SELECTION_SPLIT, confidence=confidence)}
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


def write_stats(eval_paths, out_json, split: str = "test", confidence: float = 0.95) -> dict:
    """stats.json from the per-run evaluation records (full precision, not the rounded CSV)."""
    result = _clean(study_stats(rows_from_evals(eval_paths), split, confidence))
    write_json(out_json, result, allow_nan=False)
    return result


def load_stats(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SegDistillError(f"{path}: unreadable statistics ({exc})") from None
