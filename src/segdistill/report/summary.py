"""summary.csv (one row per run and split) and summary.md: the verdicts first, then the tables of the report
split, then the checkpoint-selection split (val) as a labelled side table."""

from __future__ import annotations

import pandas as pd

from segdistill.atomic import write_text
from segdistill.errors import SegDistillError
from segdistill.report.records import (METRICS, SELECTION_SPLIT, arm_label, ci_text, mean_pm_std, pct, pts,
                                       rows_from_evals, split_label)
from segdistill.report.stats import study_stats


def bias_warning(split: str) -> str:
    return (f"**Biased numbers:** the headline split is `{split}`, the split that chose every run's checkpoint, so "
            f"every arm is overstated. Set `report.split: test` for numbers a reader can trust.")


def _arm_rows(arms: list[dict]) -> list[str]:
    lines = ["| arm | n | mIoU | acc | kappa | dice |", "|---|---|---|---|---|---|"]
    for a in arms:
        cells = [mean_pm_std(a["metrics"][k]) for k in METRICS]
        lines.append(f"| {arm_label(a['arm'], a['method'])} | {a['n']} | " + " | ".join(cells) + " |")
    return lines


def _gain_rows(gains: list[dict]) -> list[str]:
    lines = ["| method | n | gain | 95% CI | p |", "|---|---|---|---|---|"]
    for g in gains:
        if g["metric"] == "miou":
            p = "n/a" if g["n"] < 2 or g["p_value"] != g["p_value"] else f"{g['p_value']:.2g}"
            lines.append(f"| {g['method']} | {g['n']} | {pts(g['mean'])} | {ci_text(g)} | {p} |")
    return lines


def markdown(df: pd.DataFrame, split: str = "test") -> str:
    st = study_stats(df, split)
    lines = [bias_warning(split), ""] if st["biased"] else []
    lines += [f"- {v['sentence']}" for v in st["verdicts"]] or ["- no distilled arm was evaluated"]
    lines += ["", f"# segdistill summary ({split_label(split)} split)", "",
              "Metrics in %, gains in mIoU percentage points. A gain is distilled − student, paired by seed, with "
              "a two-sided paired t-test and its 95% interval.", "",
              f"## Per arm on {split} (mean ± std over seeds)", ""]
    lines += _arm_rows(st["arms"])
    lines += ["", f"## Gain of distilled over student on {split}", ""] + _gain_rows(st["gains"])
    best = st["best_setting"]
    if best:
        spread = "" if best["std"] != best["std"] else f" ± {pct(best['std'])}"
        lines += ["", f"Best setting (highest mean {split} mIoU over {best['candidates']} distilled arm(s)): "
                      f"`{best['method']}`, mIoU {pct(best['mean'])}{spread} % (n = {best['n']})."]
    cols = ["arm", "method", "seed"] + list(METRICS) + [c for c in df.columns if c.startswith("iou_")]
    lines += ["", f"## Runs ({split})", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[df["split"] == split][cols].iterrows():
        lines.append("| " + " | ".join(
            str(r[c]) if c in ("arm", "method", "seed") else pct(r[c]) for c in cols) + " |")
    sel = st.get("selection")
    if sel:
        lines += ["", f"## {sel['label']}", "",
                  f"Each run kept the checkpoint with the best {SELECTION_SPLIT} mIoU, so these numbers are biased "
                  f"upward; they are here for comparison with PaddleSeg's logs, not as results.", ""]
        lines += _arm_rows(sel["arms"]) + [""] + _gain_rows(sel["gains"])
    return "\n".join(lines) + "\n"


def write_summary(eval_paths, out_csv, out_md, split: str = "test") -> pd.DataFrame:
    df = rows_from_evals(eval_paths)
    if split not in set(df["split"]):
        raise SegDistillError(f"no evaluation on the '{split}' split in {len(eval_paths)} record(s) "
                              f"(report.split must be one of evaluate.splits)")
    md = markdown(df, split)
    write_text(out_csv, df.to_csv(index=False, float_format="%.6f"))
    write_text(out_md, md)
    return df
