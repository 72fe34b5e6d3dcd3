"""summary.csv (one row per run and split) and summary.md (the table, per-arm statistics, the gain)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from segdistill.atomic import write_text
from segdistill.errors import SegDistillError
from segdistill.report.stats import best_setting, mean_std, paired_gain

METRICS = ("miou", "acc", "kappa", "dice")


def rows_from_evals(paths) -> pd.DataFrame:
    rows = []
    for path in paths:
        try:
            rec = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SegDistillError(f"{path}: unreadable evaluation record ({exc})") from None
        for split, m in rec["splits"].items():
            row = {"run": rec.get("run"), "arm": rec.get("arm"), "method": rec.get("method", "none"),
                   "seed": rec.get("seed"), "split": split, **{k: m[k] for k in METRICS}}
            for name, v in m["class_iou"].items():
                row[f"iou_{name}"] = v
            for name, v in m["class_dice"].items():
                row[f"dice_{name}"] = v
            rows.append(row)
    df = pd.DataFrame(rows)
    order = {"teacher": 0, "student": 1, "distilled": 2}
    df["_o"] = df["arm"].map(order)
    return df.sort_values(["split", "_o", "method", "seed"]).drop(columns="_o").reset_index(drop=True)


def arm_label(arm: str, method: str) -> str:
    return arm if arm != "distilled" else f"distilled ({method})"


def arm_stats(df: pd.DataFrame, split: str) -> pd.DataFrame:
    out = []
    sub = df[df["split"] == split]
    for (arm, method), g in sub.groupby(["arm", "method"], sort=False):
        row = {"arm": arm_label(arm, method), "n": len(g)}
        for k in METRICS:
            mean, std, _ = mean_std(g[k].tolist())
            row[f"{k}_mean"], row[f"{k}_std"] = mean, std
        out.append(row)
    return pd.DataFrame(out)


def gains(df: pd.DataFrame, split: str, metric: str = "miou") -> pd.DataFrame:
    sub = df[df["split"] == split]
    student = dict(zip(sub[sub.arm == "student"].seed, sub[sub.arm == "student"][metric]))
    out = []
    for method, g in sub[sub.arm == "distilled"].groupby("method", sort=False):
        res = paired_gain(dict(zip(g.seed, g[metric])), student)
        out.append({"method": method, **{k: res[k] for k in ("n", "mean", "std", "ci_low", "ci_high")}})
    return pd.DataFrame(out)


def _pts(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.2f}"


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def markdown(df: pd.DataFrame, split: str) -> str:
    lines = [f"# segdistill summary ({split} split)", "", "## Runs", ""]
    cols = ["arm", "method", "seed"] + list(METRICS) + [c for c in df.columns if c.startswith("iou_")]
    sub = df[df["split"] == split][cols]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for _, r in sub.iterrows():
        lines.append("| " + " | ".join(
            str(r[c]) if c in ("arm", "method", "seed") else _pct(r[c]) for c in cols) + " |")
    lines += ["", "Metrics in %. ", "", "## Per arm (mean ± std over seeds)", "",
              "| arm | n | mIoU | acc | kappa | dice |", "|---|---|---|---|---|---|"]
    for _, r in arm_stats(df, split).iterrows():
        cells = [f"{_pct(r[f'{k}_mean'])} ± {_pct(r[f'{k}_std'])}" for k in METRICS]
        lines.append(f"| {r['arm']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "## Gain of distilled over student (mIoU points, paired by seed, 95% t-interval)", "",
              "| method | n | gain | 95% CI |", "|---|---|---|---|"]
    for _, r in gains(df, split).iterrows():
        ci = "n/a (n < 2)" if r["n"] < 2 else f"[{_pts(r['ci_low'])}, {_pts(r['ci_high'])}]"
        lines.append(f"| {r['method']} | {r['n']} | {_pts(r['mean'])} | {ci} |")
    best = best_setting(df, split)
    if best:
        spread = "" if math.isnan(best["std"]) else f" ± {_pct(best['std'])}"
        lines += ["", f"Best setting (highest mean mIoU over {best['candidates']} distilled arm(s)): "
                      f"`{best['method']}`, mIoU {_pct(best['mean'])}{spread} % (n = {best['n']})."]
    return "\n".join(lines) + "\n"




def write_summary(eval_paths, out_csv, out_md, split: str = "val") -> pd.DataFrame:
    df = rows_from_evals(eval_paths)
    if split not in set(df["split"]):
        raise SegDistillError(f"no evaluation on the '{split}' split in {len(eval_paths)} record(s)")
    write_text(out_csv, df.to_csv(index=False, float_format="%.6f"))
    write_text(out_md, markdown(df, split))
    return df
