"""The report's tables as reStructuredText: a compact overview (shown on the report's start page) and a full
page (summary tables, gains, best setting, model cost, export check, provenance) rendered to HTML."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd

from segdistill.atomic import write_text
from segdistill.errors import SegDistillError
from segdistill.report import tables
from segdistill.report.records import arm_label, ci_text, is_number, mean_pm_std, pct, pts


def _cell(text) -> str:
    # Escape what reST would read as markup inside a table cell.
    text = str(text).replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("|", "\\|")
    return text if text.strip() else "\\ "


def list_table(title: str, header: list[str], rows: list[list], widths=None) -> str:
    lines = [f".. list-table:: {title}", "   :header-rows: 1"]
    if widths:
        lines.append("   :widths: " + " ".join(map(str, widths)))
    lines.append("")
    for row in [header] + rows:
        lines.append(f"   * - {_cell(row[0])}")
        lines += [f"     - {_cell(c)}" for c in row[1:]]
    return "\n".join(lines) + "\n"


def arm_rows(arms: list[dict], metrics, degenerate: bool = False) -> list[list]:
    """[arm, n, (degenerate runs,) metrics...] per arm."""

    def count(a):
        return ["n/a" if a.get("degenerate") is None else a["degenerate"]] if degenerate else []

    return [
        [arm_label(a["arm"], a["method"]), a["n"], *count(a)] + [mean_pm_std(a["metrics"].get(k, {})) for k in metrics]
        for a in arms
    ]


def _p(g: dict) -> str:
    p = g.get("p_value")
    return f"{p:.2g}" if is_number(p) else "n/a"


def gain_rows(gains: list[dict], metrics=("miou",)) -> list[list]:
    return [
        [g["method"], g["metric"], g["n"], pts(g["mean"]), ci_text(g), _p(g)] for g in gains if g["metric"] in metrics
    ]


def verdict_block(stats: dict) -> str:
    """The answer first: a bias warning when the headline split chose the checkpoints, then one verdict per arm."""
    lines = []
    if stats.get("biased"):
        lines.append(
            f"**Biased numbers:** the headline split ({stats['split']}) chose every run's checkpoint, so "
            f"every arm is overstated; set report.split: test.\n"
        )
    lines += [f"- {_cell(v['sentence'])}" for v in stats.get("verdicts", [])] or ["- No distilled arm was evaluated."]
    return "\n".join(lines) + "\n"


def read_cost(path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SegDistillError(f"{path}: empty cost table")
    return rows


def _f(v, fmt) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(x) else format(x, fmt)


def cost_rows(cost: list[dict]) -> list[list]:
    return [
        [
            r["model"],
            r.get("architecture", ""),  # absent from a cost table written before the column existed
            r["backbone"],
            r["input"],
            _f(float(r["params"]) / 1e6, ".2f"),
            _f(float(r["flops"]) / 1e9, ".3f"),
            _f(r["cpu_ms"], ".1f"),
            _f(r["gpu_ms"], ".2f"),
            _f(r["compression"], ".2f") + "×",
            _f(r["cpu_speedup"], ".2f") + "×",
        ]
        for r in cost
    ]


COST_HEADER = [
    "model",
    "architecture",
    "backbone",
    "input",
    "params (M)",
    "GFLOPs",
    "CPU ms/img",
    "GPU ms/img",
    "compression",
    "CPU speedup",
]


def best_text(stats: dict) -> str:
    return tables.best_text(stats, mark=lambda name: f"**{name}**")


def many_arms_rst(stats: dict) -> list[str]:
    """Method against method (with the ranking), robustness and power, when the study has them."""
    parts = []
    if stats.get("pairs"):
        parts.append(
            list_table(
                f"Method against method on {stats['split']} (mIoU points, paired by seed, {tables.pairs_text(stats)})",
                tables.PAIR_HEADER,
                tables.pair_rows(stats),
            )
        )
        parts.append(
            list_table(
                "Ranking by mean (a description of the headline split; the setting is chosen on val)",
                tables.RANK_HEADER,
                tables.rank_rows(stats),
            )
        )
    if stats.get("robustness"):
        parts.append(
            list_table("Robustness: each check at the verdict's level", tables.ROBUST_HEADER, tables.robust_rows(stats))
        )
    if stats.get("power"):
        parts.append(_cell(tables.power_note(stats)) + "\n")
        parts.append(list_table("Seeds and power", tables.POWER_HEADER, tables.power_rows(stats)))
    return parts


def overview_rst(stats: dict, cost: list[dict], export: dict | None) -> str:
    """Compact: fits the narrow column of the report's start page."""
    parts = [
        f".. rubric:: Verdicts ({stats['split']} split)\n",
        verdict_block(stats),
        list_table(
            f"mIoU per arm on {stats['split']} (%, mean ± std over seeds)",
            ["arm", "n", "mIoU"],
            arm_rows(stats["arms"], ["miou"]),
        ),
        list_table(
            f"Gain of distilled over student on {stats['split']} (mIoU points, paired by seed)",
            tables.gain_header(stats),
            tables.gain_rows(stats),
        ),
        best_text(stats) + "\n",
        list_table(
            "Model cost",
            ["model", "architecture", "params (M)", "GFLOPs", "CPU ms/img", "speedup"],
            [[r[0], r[1], r[4], r[5], r[6], r[9]] for r in cost_rows(cost)],
        ),
    ]
    if export:
        parts.append(
            f"Exported **{export['run']}** (chosen on {export.get('chosen_on', 'val')}; "
            f"{export.get('split', 'val')} mIoU {pct(export['miou'])} %) as a Paddle inference model; max "
            f"\\|logit difference\\| to the evaluated model {export['max_abs_diff']:.2e} on "
            f"{export['batch_shape'][0]} {export.get('split', 'val')} images.\n"
        )
    return "\n".join(parts)


def full_rst(summary: pd.DataFrame, stats: dict, cost: list[dict], export: dict | None, prov: dict | None) -> str:
    split = stats["split"]
    head = [m for m in ("miou", "acc", "kappa", "dice") if m in stats["metrics"]]
    classes = [m for m in stats["metrics"] if m.startswith("iou_")]
    title = "segdistill study report"
    parts = [
        title,
        "=" * len(title),
        "",
        verdict_block(stats),
        "Metrics in %, gains in percentage points; mean ± sample std over seeds; the gain is distilled − "
        "student paired by seed, with a two-sided paired t-test, its p-value and 95% interval (none for n < 2).",
        "",
        FIGURES_MARK,
        "",
    ]
    parts.append(
        list_table(
            f"Per arm ({split}; degenerate: within 1 mIoU point of predicting the most frequent class everywhere)",
            ["arm", "n", "degenerate"] + head + classes,
            arm_rows(stats["arms"], head + classes, degenerate=True),
        )
    )
    parts.append(
        list_table(
            f"Gain of distilled over student ({split}, mIoU)", tables.gain_header(stats), tables.gain_rows(stats)
        )
    )
    parts.append(
        list_table(
            f"Gain of distilled over student ({split}, every metric, unadjusted)",
            ["method", "metric", "n", "gain", "95% CI", "p"],
            gain_rows(stats["gains"], head),
        )
    )
    parts += many_arms_rst(stats)
    parts.append(best_text(stats) + "\n")
    sel = stats.get("selection")
    if sel:
        parts.append(
            list_table(
                f"Per arm ({sel['label']}; biased upward, for comparison only)",
                ["arm", "n"] + head,
                arm_rows(sel["arms"], head),
            )
        )
        parts.append(
            list_table(
                f"Gain of distilled over student ({sel['label']})",
                ["method", "metric", "n", "gain", "95% CI", "p"],
                gain_rows(sel["gains"], ("miou",)),
            )
        )
    sub = summary[summary["split"] == split]
    cols = ["run"] + head + classes
    parts.append(
        list_table(f"Runs ({split})", cols, [[r["run"]] + [pct(r[c]) for c in cols[1:]] for _, r in sub.iterrows()])
    )
    parts.append(
        list_table(
            "Model cost (FLOPs = 2 × conv/linear multiply-accumulates; latency = median per image)",
            COST_HEADER,
            cost_rows(cost),
        )
    )
    if export:
        parts.append(_export_table(export))
    if prov:
        parts.append(_provenance_table(prov))
    return "\n".join(parts)


def _export_table(export: dict) -> str:
    """The exported model: which run, chosen on which split, and how closely the inference model matches it."""
    return list_table(
        "Export",
        ["key", "value"],
        [
            ["run", export["run"]],
            ["chosen on", export.get("chosen_on", "n/a")],
            [f"{export.get('split', 'val')} mIoU", pct(export["miou"])],
            ["input spec", str(export["input_spec"])],
            ["files", ", ".join(export["files"])],
            ["max abs logit diff", f"{export['max_abs_diff']:.3e}"],
            ["argmax agreement", pct(export["label_agreement"])],
            ["tolerance", f"{export['tolerance']:g}"],
            ["checked with", export.get("predictor", "n/a")],
        ],
    )


def _provenance_table(prov: dict) -> str:
    """Where the numbers came from: date, config and file hashes, commit, packages, machine."""
    git = prov.get("git") or {}
    rows = [
        ["date (UTC)", prov["date_utc"]],
        ["config sha256", prov["config_sha256"]],
        [
            "git commit",
            (git.get("commit", "none") + (" (modified)" if git.get("dirty") else "")) if git else "not a git checkout",
        ],
    ]
    rows += [[f"file {k}", v[:16]] for k, v in prov.get("config_files", {}).items()]
    rows += [[f"package {k}", v] for k, v in prov["packages"].items()]
    m = prov["machine"]
    rows += [
        ["machine", f"{m.get('platform')}, {m.get('cpu')}, {m.get('cpu_count')} CPUs, {m.get('memory_gb')} GB"],
        ["GPUs", ", ".join(m.get("gpus") or []) or "none"],
    ]
    return list_table("Provenance", ["item", "value"], rows)


CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
td p, th p { margin: 0; }
caption { font-weight: bold; text-align: left; padding-bottom: 0.3em; }
"""


# A paragraph the HTML writer keeps verbatim; replaced by the embedded figures.
FIGURES_MARK = "segdistill-figures-go-here"


def figures_html(figures: list[tuple[str, str]]) -> str:
    """PNG files as inline images, so overview.html stands alone (no files beside it to lose)."""
    import base64
    import html

    items = []
    for caption, path in figures:
        try:
            data = base64.b64encode(Path(path).read_bytes()).decode()
        except OSError as exc:
            raise SegDistillError(f"{path}: cannot read the figure ({exc})") from None
        items.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
            f'style="max-width:100%"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    return "\n".join(items)


def render_html(rst: str) -> str:
    from docutils.core import publish_string

    html = publish_string(
        rst,
        writer_name="html5",
        settings_overrides={
            "embed_stylesheet": False,
            "stylesheet_path": "",
            "stylesheet": "",
            "report_level": 3,
            "halt_level": 3,
            "file_insertion_enabled": False,
            "raw_enabled": False,
            "_disable_config": True,
        },
    ).decode()
    return html.replace("</head>", f"<style>{CSS}</style>\n</head>", 1)


def _load_json(path):
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SegDistillError(f"{path}: unreadable ({exc})") from None


def write_overview(
    summary_csv,
    stats_json,
    cost_csv,
    out_rst,
    out_html,
    export_json=None,
    provenance_json=None,
    figures: list[tuple[str, str]] = (),
) -> None:
    """`figures`: (caption, png path) pairs embedded in the HTML page after the verdicts."""
    summary = pd.read_csv(summary_csv)
    stats = _load_json(stats_json)
    cost = read_cost(cost_csv)
    export = _load_json(export_json)
    prov = _load_json(provenance_json)
    write_text(out_rst, overview_rst(stats, cost, export))
    page = render_html(full_rst(summary, stats, cost, export, prov))
    page = page.replace(f"<p>{FIGURES_MARK}</p>", figures_html(list(figures)), 1)
    write_text(out_html, page)
