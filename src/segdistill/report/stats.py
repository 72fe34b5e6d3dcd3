"""Statistics over seeds: mean ± std per arm, the paired gain (distilled − student) with a t-interval, and the
best distillation setting of a study (stats.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from segdistill.errors import SegDistillError


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and math.isfinite(float(x))


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for n=1) and n, over the finite values."""
    v = np.asarray([float(x) for x in values if _finite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan, n


def t_quantile(p: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, dof))


def paired_gain(distilled: dict, student: dict, confidence: float = 0.95) -> dict:
    """Gain distilled − student over the seeds both have (with finite values). CI is a two-sided Student
    t-interval on the paired differences; with n < 2 there is no interval (NaN, shown as "n/a")."""
    seeds = sorted(s for s in set(distilled) & set(student) if _finite(distilled[s]) and _finite(student[s]))
    d = np.asarray([distilled[s] - student[s] for s in seeds], dtype=float)
    n = len(d)
    out = {"n": n, "seeds": seeds, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "confidence": confidence, "diffs": [float(x) for x in d]}
    if n == 0:
        return out
    out["mean"] = float(d.mean())
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
        out.update(std=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


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


def metric_columns(df) -> list[str]:
    """The metric columns of a summary frame, headline metrics first."""
    head = [c for c in ("miou", "acc", "kappa", "dice") if c in df.columns]
    rest = [c for c in df.columns if c.startswith(("iou_", "dice_"))]
    return head + rest


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


def best_setting(df, split: str = "val", metric: str = "miou") -> dict | None:
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


def best_run(df, split: str = "val", metric: str = "miou") -> dict | None:
    """The single distilled run with the highest `metric` (ties: the run id that sorts first)."""
    sub = df[(df["split"] == split) & (df["arm"] == "distilled")]
    cands = [(-float(v), str(r)) for r, v in zip(sub["run"], sub[metric]) if _finite(v)]
    if not cands:
        return None
    neg, run = min(cands)
    return {"run": run, "metric": metric, "value": -neg}


def study_stats(df, split: str = "val", confidence: float = 0.95) -> dict:
    if split not in set(df["split"]):
        raise SegDistillError(f"no evaluation on the '{split}' split in the summary")
    return {
        "split": split,
        "confidence": confidence,
        "metrics": metric_columns(df),
        "arms": arm_table(df, split),
        "gains": gain_table(df, split, confidence=confidence),
        "best_setting": best_setting(df, split),
        "best_run": best_run(df, split),
    }


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


def write_stats(eval_paths, out_json, split: str = "val", confidence: float = 0.95) -> dict:
    """stats.json from the per-run evaluation records (full precision, not the rounded CSV)."""
    from segdistill.report.summary import rows_from_evals

    result = _clean(study_stats(rows_from_evals(eval_paths), split, confidence))
    from segdistill.atomic import write_json

    write_json(out_json, result, allow_nan=False)
    return result


def load_stats(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SegDistillError(f"{path}: unreadable statistics ({exc})") from None
