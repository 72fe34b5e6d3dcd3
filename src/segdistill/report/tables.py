"""The rows of the many-arms tables (family-adjusted gains, method against method, robustness, power, the
chosen setting) from stats.json, as lists of cells: summary.md prints them as Markdown, the overview as reST."""

from __future__ import annotations

from segdistill.report.records import HEADLINE_METRIC, SELECTION_SPLIT, is_number, pct, pts


def _p(v) -> str:
    return f"{v:.2g}" if is_number(v) else "n/a"


def _ci(e: dict | None) -> str:
    if not e or not is_number(e.get("ci_low")) or not is_number(e.get("ci_high")):
        return "n/a"
    return f"[{pts(e['ci_low'])}, {pts(e['ci_high'])}]"


def pairs_text(stats: dict) -> str:
    m = stats.get("pairs_family", 0)
    return f"Holm over {m} pair{'s' if m != 1 else ''}"


def family_size(stats: dict) -> int:
    return (stats.get("family") or {}).get("members", 1)


def gain_header(stats: dict) -> list[str]:
    head = ["method", "n", "gain", "95% CI", "p"]
    if family_size(stats) > 1:
        head[3:] = ["95% CI (unadjusted)", "p (unadjusted)", "simultaneous 95% CI", "Holm p"]
    return head


def gain_rows(stats: dict, gains: list[dict] | None = None) -> list[list[str]]:
    """One row per distilled arm on the headline metric; the adjusted columns when the family has k > 1."""
    rows = []
    for g in stats["gains"] if gains is None else gains:
        if g["metric"] != HEADLINE_METRIC:
            continue
        ci = "n/a (n < 2)" if g["n"] < 2 else _ci(g)
        row = [g["method"], str(g["n"]), pts(g["mean"]), ci, "n/a" if g["n"] < 2 else _p(g["p_value"])]
        if gains is None and family_size(stats) > 1:
            adj = g.get("adjusted") or {}
            row += [_ci(adj), _p(adj.get("p_value"))]
        rows.append(row)
    return rows


PAIR_HEADER = ["difference", "n", "mean", "simultaneous 95% CI", "Holm p", "verdict"]


def pair_rows(stats: dict) -> list[list[str]]:
    return [
        [
            f"{p['a']} − {p['b']}",
            str(p["n"]),
            pts(p["mean"]),
            _ci(p["adjusted"]),
            _p(p["adjusted"]["p_value"]),
            p["verdict"],
        ]
        for p in stats.get("pairs", [])
    ]


RANK_HEADER = ["rank", "method", "mean mIoU", "against the top arm"]


def rank_rows(stats: dict) -> list[list[str]]:
    return [[str(r["rank"]), r["method"], pct(r["mean"]), r["status"]] for r in stats.get("ranking", [])]


ROBUST_HEADER = ["method", "n", "t-interval", "BCa bootstrap", "Wilcoxon p (Holm)", "checks"]


def robust_rows(stats: dict) -> list[list[str]]:
    gains = {g["method"]: g for g in stats["gains"] if g["metric"] == HEADLINE_METRIC}
    rows = []
    for r in stats.get("robustness", []):
        v, w = r["verdicts"], r["wilcoxon"]
        t_ci = _ci(gains[r["method"]].get("adjusted")) if r["method"] in gains else "n/a"
        rows.append(
            [
                r["method"],
                str(r["n"]),
                f"{t_ci}: {v['t']}",
                f"{_ci(r['bootstrap'])}: {v['bootstrap']}",
                f"{_p(w['p_holm'])}: {v['wilcoxon']}",
                r["agreement"],
            ]
        )
    return rows


POWER_HEADER = [
    "method",
    "n",
    "sd of per-seed gains",
    "smallest gain found (80% power)",
    "planned gain",
    "seeds needed",
]


def power_rows(stats: dict) -> list[list[str]]:
    rows = []
    for p in stats.get("power", []):
        sd = f"{100 * p['sd']:.2f}" if is_number(p.get("sd")) else "n/a"
        det = f"{100 * p['detectable']:.2f}" if is_number(p.get("detectable")) else "n/a"
        plan = f"{100 * p['min_effect']:.2f} ({p['min_effect_source']})" if is_number(p.get("min_effect")) else "n/a"
        need = str(p["seeds_needed"]) if p.get("seeds_needed") else f"n/a ({p.get('reason') or 'none'})"
        rows.append([p["method"], str(p["n"]), sd, det, plan, need])
    return rows


def power_note(stats: dict) -> str:
    k, alpha = family_size(stats), (stats.get("family") or {}).get("alpha", 0.05)
    level = f"α/k = {alpha / k:.2g} (k = {k} arms)" if k > 1 else f"α = {alpha:g}"
    return (
        f"Power of the paired t-test at {level}, two-sided, from each arm's observed sd of the per-seed "
        f"gains; gains in mIoU points. `report.min_effect` sets the planned gain."
    )


def best_text(stats: dict, mark=lambda s: f"`{s}`") -> str:
    """The setting chosen on val with its headline numbers, and the run exported from it; `mark` sets names
    apart (Markdown code by default)."""
    b = stats.get("best_setting")
    if not b:
        return (
            f"No distilled arm was evaluated on {SELECTION_SPLIT}, so no setting is chosen (the headline split "
            f"takes part in no choice; add {SELECTION_SPLIT} to evaluate.splits)."
        )
    params = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in b["params"].items())
    sel = b["selection"]
    spread = f" ± {pct(b['std'])}" if is_number(b.get("std")) else ""
    text = (
        f"Best setting, chosen on {b['chosen_on']} (highest mean {b['chosen_on']} mIoU of {b['candidates']} "
        f"distilled arm(s)): {mark(b['method'])}"
        + (f" (method {b['base']}, {params})" if params else "")
        + f"; {b['chosen_on']} mIoU {pct(sel['mean'])} %, {b['split']} mIoU {pct(b['mean'])}{spread} % "
        f"(n = {b['n']})."
    )
    r = stats.get("best_run")
    if r:
        text += (
            f" Exported run: {mark(r['run'])}, the arm's run with the best {r['chosen_on']} mIoU "
            f"({pct(r['selection_value'])} %); {r['split']} mIoU {pct(r['value'])} %."
        )
    return text
