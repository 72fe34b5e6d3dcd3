"""summary.csv (one row per run and split) and summary.md: the verdicts first, then the tables of the report
split, then the checkpoint-selection split (val) as a labelled side table. summary.md is rendered from
stats.json; nothing here computes a statistic."""

from __future__ import annotations

import pandas as pd

from segdistill.atomic import write_text
from segdistill.errors import SegDistillError
from segdistill.report import tables
from segdistill.report.records import (
    HEADLINE_SPLIT,
    MAJORITY,
    METRICS,
    SELECTION_SPLIT,
    arm_label,
    mean_pm_std,
    pct,
    read_record,
    rows_from_records,
    split_label,
)
from segdistill.report.stats import load_stats


def bias_warning(split: str) -> str:
    return (
        f"**Biased numbers:** the headline split is `{split}`, the split that chose every run's checkpoint, so "
        f"every arm is overstated. Set `report.split: test` for numbers a reader can trust."
    )


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    cell = [str(c).replace("|", "\\|") for c in header]
    lines = ["| " + " | ".join(cell) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]


def _degenerate_count(a: dict) -> str:
    return "n/a" if a.get("degenerate") is None else str(a["degenerate"])


def _arm_rows(arms: list[dict]) -> list[str]:
    return md_table(
        ["arm", "n", "degenerate", "mIoU", "acc", "kappa", "dice"],
        [
            [arm_label(a["arm"], a["method"]), a["n"], _degenerate_count(a)]
            + [mean_pm_std(a["metrics"][k]) for k in METRICS]
            for a in arms
        ],
    )


DEGENERATE_TEXT = (
    "degenerate: runs whose mIoU is no more than 1 point above predicting the split's most frequent class "
    "everywhere (from its labels); they stay in every mean and gain."
)


def _runs_table(df: pd.DataFrame, st: dict) -> list[str]:
    """Every run on the report split; a degenerate one is marked."""
    split = st["split"]
    marked = {d["run"] for d in (st.get("degenerate") or {}).get("runs") or []}
    cols = ["arm", "method", "seed"] + list(METRICS) + [c for c in df.columns if c.startswith("iou_")]
    rows = [
        [str(r[c]) if c in ("arm", "method", "seed") else pct(r[c]) for c in cols]
        + ["yes" if r["run"] in marked else ""]
        for _, r in df[df["split"] == split].iterrows()
    ]
    return md_table(cols + ["degenerate"], rows)


def _many_arms(st: dict) -> list[str]:
    """Method against method, robustness and power: the sections a study of several arms needs."""
    lines = []
    if st.get("pairs"):
        lines += ["", f"## Method against method on {st['split']} (paired by seed, {tables.pairs_text(st)})", ""]
        lines += [f"- {p['sentence']}" for p in st["pairs"]] + [""]
        lines += md_table(tables.PAIR_HEADER, tables.pair_rows(st)) + [""]
        lines += md_table(tables.RANK_HEADER, tables.rank_rows(st))
    if st.get("robustness"):
        lines += [
            "",
            "## Robustness of the gains",
            "",
            "Each check at the verdict's level: the t-interval (simultaneous when k > 1), a paired BCa "
            "bootstrap interval and the Wilcoxon signed-rank test (Holm over the arms).",
            "",
        ]
        lines += md_table(tables.ROBUST_HEADER, tables.robust_rows(st))
    if st.get("power"):
        lines += ["", "## Seeds and power", "", tables.power_note(st), ""]
        lines += md_table(tables.POWER_HEADER, tables.power_rows(st))
    return lines


def protocols(records) -> dict[str, str]:
    """Each arm's evaluation protocol (PaddleSeg's test_config) as the records state it, in arm order; runs of
    one arm that differ are listed together."""
    out = {}
    for rec in records:
        label = arm_label(rec.get("arm") or "?", rec.get("method", "none"))
        proto = (rec.get("protocol") or {}).get("label", "plain")
        out.setdefault(label, [])
        if proto not in out[label]:
            out[label].append(proto)
    return {k: " / ".join(v) for k, v in out.items()}


FINAL_WEIGHTS_NOTE = (
    "No selection split (`data.paddleseg.selection_images: 0`): no checkpoint was chosen, every run kept its final "
    "weights."
)


def markdown(df: pd.DataFrame, st: dict, protocol: dict[str, str] | None = None, final_weights: bool = False) -> str:
    """summary.md from the runs (`df`, for the runs table) and the statistics `st` (stats.json); `protocol`
    (arm label -> protocol) is stated when an arm was not evaluated plainly; `final_weights`: the study had no
    split to choose checkpoints on, and the summary says so after the verdicts."""
    split = st["split"]
    lines = [bias_warning(split), ""] if st["biased"] else []
    lines += [f"- {v['sentence']}" for v in st["verdicts"]] or ["- no distilled arm was evaluated"]
    lines += ["", FINAL_WEIGHTS_NOTE] if final_weights else []
    lines += [
        "",
        f"# segdistill summary ({split_label(split)} split)",
        "",
        "Metrics in %, gains in mIoU percentage points. A gain is distilled − student, paired by seed, with "
        "a two-sided paired t-test and its 95% interval"
        + (
            f"; the verdicts use the simultaneous intervals over the {tables.family_size(st)} arms "
            f"(Bonferroni) and Holm's p-values."
            if tables.family_size(st) > 1
            else "."
        ),
        "",
    ]
    if protocol and set(protocol.values()) != {"plain"}:
        text = "; ".join(f"{arm}: {label}" for arm, label in protocol.items())
        lines += [f"Evaluation protocol (PaddleSeg's test_config): {text}.", ""]
    lines += [
        f"## Per arm on {split} (mean ± std over seeds)",
        "",
    ]
    lines += _arm_rows(st["arms"]) + ["", DEGENERATE_TEXT]
    lines += ["", f"## Gain of distilled over student on {split}", ""]
    lines += md_table(tables.gain_header(st), tables.gain_rows(st))
    lines += _many_arms(st)
    lines += ["", tables.best_text(st)]
    lines += ["", f"## Runs ({split})", ""] + _runs_table(df, st)
    sel = st.get("selection")
    if sel:
        lines += [
            "",
            f"## {sel['label']}",
            "",
            f"Each run kept the checkpoint with the best {SELECTION_SPLIT} mIoU, so these numbers are biased "
            f"upward; they are here for comparison with PaddleSeg's logs, not as results.",
            "",
        ]
        lines += _arm_rows(sel["arms"]) + [""] + md_table(tables.gain_header({}), tables.gain_rows(st, sel["gains"]))
    return "\n".join(lines) + "\n"


def write_summary(
    eval_paths, stats_json, out_csv, out_md, split: str = HEADLINE_SPLIT, final_weights: bool = False
) -> pd.DataFrame:
    """summary.csv from the evaluation records, summary.md from them and stats.json (written by the stats
    rule for the same records and split)."""
    records = [read_record(p) for p in eval_paths]
    df = rows_from_records(records)
    if split not in set(df["split"]):
        raise SegDistillError(
            f"no evaluation on the '{split}' split in {len(eval_paths)} record(s) "
            f"(report.split must be one of evaluate.splits)"
        )
    st = load_stats(stats_json)
    if st.get("split") != split:
        raise SegDistillError(
            f"{stats_json}: statistics on the '{st.get('split')}' split, the summary asks for "
            f"'{split}' (rerun `segdistill stats --split {split}`)"
        )
    md = markdown(df, st, protocols(records), final_weights)
    write_text(out_csv, df.drop(columns=[MAJORITY]).to_csv(index=False, float_format="%.6f"))
    write_text(out_md, md)
    return df
