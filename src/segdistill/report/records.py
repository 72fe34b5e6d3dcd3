"""What every part of the report shares: rows from the evaluation records, metric names, arm labels, the split
names and the number formats. Statistics, tables and figures import from here, never from each other."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from segdistill.errors import SegDistillError
from segdistill.metrics import majority_miou
from segdistill.report.names import HEADLINE_METRIC, HEADLINE_SPLIT, METRICS, SELECTION_SPLIT  # noqa: F401

# The mIoU of predicting the split's most frequent class everywhere (segdistill.metrics.majority_miou), per row.
MAJORITY = "majority_miou"


def read_record(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SegDistillError(f"{path}: unreadable evaluation record ({exc})") from None


def rows_from_evals(paths) -> pd.DataFrame:
    """One row per run and split from the per-run evaluation JSONs (`segdistill evaluate`), in a fixed order."""
    return rows_from_records(read_record(p) for p in paths)


def rows_from_records(records) -> pd.DataFrame:
    """`rows_from_evals` for evaluation records already in memory (the same dicts the JSON files hold)."""
    rows = []
    for rec in records:
        for split, m in rec["splits"].items():
            row = {
                "run": rec.get("run"),
                "arm": rec.get("arm"),
                "method": rec.get("method", "none"),
                "seed": rec.get("seed"),
                "split": split,
                **{k: m[k] for k in METRICS},
            }
            # Not a column of summary.csv (write_summary leaves it out): NaN for a record without the histogram.
            row[MAJORITY] = majority_miou(m["class_pixels"].values()) if m.get("class_pixels") else math.nan
            for name, v in m["class_iou"].items():
                row[f"iou_{name}"] = v
            for name, v in m["class_dice"].items():
                row[f"dice_{name}"] = v
            rows.append(row)
    df = pd.DataFrame(rows)
    order = {"teacher": 0, "student": 1, "distilled": 2}
    df["_o"] = df["arm"].map(order)
    return df.sort_values(["split", "_o", "method", "seed"]).drop(columns="_o").reset_index(drop=True)


def metric_columns(df) -> list[str]:
    """The metric columns of a summary frame, headline metrics first."""
    head = [c for c in METRICS if c in df.columns]
    rest = [c for c in df.columns if c.startswith(("iou_", "dice_"))]
    return head + rest


def arm_label(arm: str, method: str) -> str:
    """`teacher`, `student`, or `distilled (kl)`."""
    return arm if arm in ("teacher", "student") else f"distilled ({method})"


def split_label(split: str) -> str:
    """The split's name as the report prints it; the selection split says so."""
    return f"{split} (used to select checkpoints)" if split == SELECTION_SPLIT else split


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pct(v) -> str:
    """A fraction as a percentage (0.7749 -> 77.49), or n/a."""
    return f"{100 * v:.2f}" if is_number(v) else "n/a"


def pts(v) -> str:
    """A difference of fractions in percentage points, signed (0.0405 -> +4.05), or n/a."""
    return f"{100 * v:+.2f}" if is_number(v) else "n/a"


def mean_pm_std(m: dict) -> str:
    """`{mean, std}` (fractions) as `77.49 ± 1.63`, `77.49 (n=1)` or n/a."""
    if not is_number(m.get("mean")):
        return "n/a"
    return pct(m["mean"]) + (f" ± {pct(m['std'])}" if is_number(m.get("std")) else " (n=1)")


def ci_text(g: dict) -> str:
    """A gain's interval as `[+0.18, +7.92]`, or why there is none."""
    if g["n"] < 2 or not is_number(g.get("ci_low")):
        return "n/a (n < 2)"
    return f"[{pts(g['ci_low'])}, {pts(g['ci_high'])}]"
