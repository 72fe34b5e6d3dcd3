"""Figures for many arms, drawn from stats.json: the gain of every distilled arm with its family-adjusted
interval (a forest plot), and for a 1-D or 2-D sweep the gain over the grid."""

from __future__ import annotations

import numpy as np

from segdistill.errors import SegDistillError
from segdistill.report.figures import _plt, _save
from segdistill.report.records import HEADLINE_METRIC, is_number
from segdistill.report.stats import load_stats, parse_method

SIDE_COLORS = {"gain": "#2a9d4b", "loss": "#c44e52"}


def _gains(stats: dict, source) -> list[dict]:
    gains = [g for g in stats["gains"] if g["metric"] == HEADLINE_METRIC]
    if not gains:
        raise SegDistillError(f"{source}: no distilled arm has a gain on {stats['split']}: nothing to plot")
    return gains


def _points(g: dict) -> tuple[float, float, float]:
    """Mean and adjusted interval in points (NaN when there is none)."""
    adj = g.get("adjusted") or {}
    low, high = adj.get("ci_low"), adj.get("ci_high")
    return (100 * g["mean"], 100 * low if is_number(low) else np.nan, 100 * high if is_number(high) else np.nan)


def forest(stats_json, out_png) -> list[dict]:
    """One row per distilled arm: the mean gain over the student (points) with its adjusted interval (thick)
    and the unadjusted one (thin, grey, below it); green when the adjusted interval is above 0, red below."""
    stats = load_stats(stats_json)
    gains = _gains(stats, stats_json)
    verdict = {v["method"]: v["verdict"] for v in stats.get("verdicts", [])}
    k = (stats.get("family") or {}).get("members", 1)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(gains) + 1.4))
    rows = []
    for i, g in enumerate(reversed(gains)):
        mean, low, high = _points(g)
        color = SIDE_COLORS.get(verdict.get(g["method"]), "#555555")
        if is_number(g.get("ci_low")):  # just below the adjusted one, so both stay visible
            ax.errorbar(
                [mean],
                [i - 0.22],
                xerr=[[mean - 100 * g["ci_low"]], [100 * g["ci_high"] - mean]],
                fmt="none",
                ecolor="#999999",
                elinewidth=1,
                capsize=2,
            )
        if np.isfinite(low):
            ax.plot([low, high], [i, i], color=color, linewidth=3, solid_capstyle="butt")
        ax.plot([mean], [i], "o", color=color, markersize=5)
        rows.append({"method": g["method"], "mean": mean, "ci_low": low, "ci_high": high})
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(gains)), [g["method"] for g in reversed(gains)], fontsize=8)
    ax.set_xlabel(f"gain over student on {stats['split']} (mIoU points)")
    which = f"simultaneous 95% intervals over {k} arms (thin: unadjusted)" if k > 1 else "95% interval"
    ax.set_title(f"Gain per arm, paired by seed: {which}", fontsize=9)
    ax.set_ylim(-0.6, len(gains) - 0.5)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, out_png)
    plt.close(fig)
    return list(reversed(rows))


def sweep_axes(methods) -> tuple[str, list[str], dict[str, dict]]:
    """The sweep's base method, its axes and each point's parameters, from the arm names (`base~k=v~...`)."""
    points = {m: parse_method(m) for m in methods}
    points = {m: (b, p) for m, (b, p) in points.items() if p}
    bases = {b for b, _ in points.values()}
    axes = sorted({k for _, p in points.values() for k in p})
    if len(bases) != 1 or not 1 <= len(axes) <= 2:
        raise SegDistillError(
            f"the sweep figure needs the points of one method over 1 or 2 parameters; arms "
            f"{', '.join(points) or '(no sweep points)'} have {len(axes)} parameter(s)"
        )
    return bases.pop(), axes, {m: p for m, (_, p) in points.items()}


def sweep_grid(stats_json, out_png) -> dict:
    """1-D: the gain against the swept value with adjusted intervals. 2-D: a heat map of the mean gain, each
    cell with its adjusted interval; cells whose interval lies above 0 are framed. The setting chosen on val
    is marked with a star."""
    stats = load_stats(stats_json)
    gains = {g["method"]: g for g in _gains(stats, stats_json)}
    base, axes, params = sweep_axes(gains)
    chosen = (stats.get("best_setting") or {}).get("method")
    plt = _plt()
    if len(axes) == 1:
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        pts = sorted((float(p[axes[0]]), m) for m, p in params.items())
        for x, m in pts:
            mean, low, high = _points(gains[m])
            ax.errorbar(
                [x],
                [mean],
                yerr=[[mean - low], [high - mean]] if np.isfinite(low) else None,
                fmt="o",
                color="#1f5fa8",
                capsize=4,
            )
            if m == chosen:
                ax.plot([x], [mean], "*", color="#e0a000", markersize=14, zorder=4)
        ax.plot([x for x, _ in pts], [_points(gains[m])[0] for _, m in pts], "-", color="#1f5fa8", alpha=0.5)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel(axes[0])
        ax.set_ylabel(f"gain on {stats['split']} (mIoU points)")
        grid = {"axes": axes, "points": [(x, m) for x, m in pts]}
    else:
        xs = sorted({float(p[axes[0]]) for p in params.values()})
        ys = sorted({float(p[axes[1]]) for p in params.values()})
        z = np.full((len(ys), len(xs)), np.nan)
        fig, ax = plt.subplots(figsize=(1.3 * len(xs) + 2.6, 1.0 * len(ys) + 1.8))
        cells = []
        for m, p in params.items():
            i, j = ys.index(float(p[axes[1]])), xs.index(float(p[axes[0]]))
            mean, low, high = _points(gains[m])
            z[i, j] = mean
            text = (
                f"{mean:+.1f}"
                + (f"\n[{low:+.1f}, {high:+.1f}]" if np.isfinite(low) else "")
                + ("\n(chosen)" if m == chosen else "")
            )
            cells.append((j, i, text, mean))
            if np.isfinite(low) and low > 0:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
        lim = np.nanmax(np.abs(z)) if np.isfinite(z).any() else 1.0
        img = ax.imshow(z, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
        for j, i, text, mean in cells:  # white on the dark ends of the colour map
            ax.text(
                j, i, text, ha="center", va="center", fontsize=7, color="white" if abs(mean) > 0.6 * lim else "black"
            )
        fig.colorbar(img, ax=ax, label=f"mean gain on {stats['split']} (points)")
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        grid = {"axes": axes, "x": xs, "y": ys, "mean": z.tolist()}
    ax.set_title(f"Sweep of {base}: gain over student, simultaneous 95% intervals", fontsize=9)
    _save(fig, out_png)
    plt.close(fig)
    return grid
