"""The report's figures (matplotlib, Agg backend): mIoU per arm with intervals, the paired student -> distilled
plot, training curves, and a grid of predictions."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from segdistill.errors import SegDistillError
from segdistill.report.records import HEADLINE_METRIC, HEADLINE_SPLIT, arm_label

ARM_COLORS = {"teacher": "#4c72b0", "student": "#dd8452"}
DISTILLED_COLORS = ["#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out) -> None:
    """Write atomically; no timestamp in the metadata, so the same figure gives the same bytes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    os.replace(tmp, out)


def _colors(keys) -> dict:
    out, i = {}, 0
    for k in keys:
        if k in ARM_COLORS:
            out[k] = ARM_COLORS[k]
        else:
            out[k] = DISTILLED_COLORS[i % len(DISTILLED_COLORS)]
            i += 1
    return out


def _split_rows(summary_csv, split: str):
    import pandas as pd

    df = pd.read_csv(summary_csv)
    sub = df[df["split"] == split]
    if sub.empty:
        raise SegDistillError(f"{summary_csv}: no rows for the '{split}' split")
    return sub


def arm_means(summary_csv, out_png, split: str = HEADLINE_SPLIT, confidence: float = 0.95) -> list[dict]:
    """Per arm: mean mIoU over seeds with its t-interval (none for n = 1), dots = single seeds.

    The axis spans the data, not zero: the question is a difference of a few points, which a bar from zero
    would hide."""
    from segdistill.report.stats import mean_interval, mean_std

    sub = _split_rows(summary_csv, split)
    arms = []
    for (arm, method), g in sub.groupby(["arm", "method"], sort=False):
        mean, std, n = mean_std(g[HEADLINE_METRIC].tolist())
        low, high = mean_interval(g[HEADLINE_METRIC].tolist(), confidence)
        arms.append(
            {
                "label": arm_label(arm, method),
                "mean": mean,
                "std": std,
                "n": n,
                "ci_low": low,
                "ci_high": high,
                "values": g[HEADLINE_METRIC].tolist(),
            }
        )
    plt = _plt()
    colors = _colors([a["label"] for a in arms])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(arms) + 1.5), 3.8))
    for i, a in enumerate(arms):
        vals = 100 * np.asarray(a["values"], dtype=float)
        ax.scatter(
            np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)),
            vals,
            s=14,
            color=colors[a["label"]],
            alpha=0.6,
            zorder=2,
        )
        m = 100 * a["mean"]
        if np.isfinite(a["ci_low"]):
            ax.errorbar(
                [i],
                [m],
                yerr=[[m - 100 * a["ci_low"]], [100 * a["ci_high"] - m]],
                fmt="o",
                color="black",
                capsize=6,
                markersize=6,
                zorder=3,
            )
        else:
            ax.plot([i], [m], "o", color="black", markersize=6, zorder=3)
        ax.annotate(f"{m:.1f}\nn={a['n']}", (i + 0.22, m), fontsize=8, va="center")
    ax.set_xticks(range(len(arms)), [a["label"].replace(" (", "\n(") for a in arms], fontsize=8)
    ax.set_xlim(-0.5, len(arms) - 0.2)
    ax.set_ylabel(f"{split} mIoU (%)")
    ax.set_title(f"mIoU per arm on {split}: mean with {round(100 * confidence)}% t-interval; dots: seeds", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out_png)
    plt.close(fig)
    return arms


def degenerate_marks(stats_json) -> set[tuple[str, str, int]]:
    """(arm, method, seed) of each degenerate run in stats.json (`segdistill.report.stats.degenerate_runs`)."""
    from segdistill.report.stats import load_stats

    runs = (load_stats(stats_json).get("degenerate") or {}).get("runs") or []
    return {(d["arm"], d["method"], int(d["seed"])) for d in runs}


def paired_lines(summary_csv, out_png, split: str = HEADLINE_SPLIT, stats_json=None) -> dict:
    """One line per seed from the student to each distilled arm (same seed: same data order and student
    initialisation), so a reader sees whether the gain holds seed by seed; the teacher is a dashed line. With
    `stats_json`, a degenerate run (stats.json's `degenerate.runs`) is a hollow marker."""
    sub = _split_rows(summary_csv, split)
    degenerate = degenerate_marks(stats_json) if stats_json is not None else set()
    stu = sub[sub.arm == "student"]
    student = {int(s): float(v) for s, v in zip(stu.seed, stu[HEADLINE_METRIC])}
    methods = list(dict.fromkeys(sub[sub.arm == "distilled"].method))
    if not student or not methods:
        raise SegDistillError(f"{summary_csv}: the paired plot needs student and distilled rows on '{split}'")
    plt = _plt()
    fig, axes = plt.subplots(1, len(methods), figsize=(2.6 * len(methods) + 1.2, 3.8), sharey=True, squeeze=False)
    lines = {}
    teacher = sub[sub.arm == "teacher"][HEADLINE_METRIC]
    for ax, method in zip(axes[0], methods):
        g = sub[(sub.arm == "distilled") & (sub.method == method)]
        pairs = sorted(
            (int(s), student[int(s)], float(v)) for s, v in zip(g.seed, g[HEADLINE_METRIC]) if int(s) in student
        )
        for seed, a, b in pairs:
            color = "#2a9d4b" if b > a else ("#c44e52" if b < a else "#777777")
            ax.plot([0, 1], [100 * a, 100 * b], "-", color=color, linewidth=1.2, alpha=0.85)
            for x, v, run in ((0, a, ("student", "none", seed)), (1, b, ("distilled", method, seed))):
                hollow = run in degenerate
                ax.plot(
                    [x], [100 * v], "o", color=color, markersize=6 if hollow else 4, mfc="white" if hollow else color
                )
            ax.annotate(f"{seed}", (1.04, 100 * b), fontsize=7, va="center", color="#555555")
        for t in teacher:
            ax.axhline(100 * t, color=ARM_COLORS["teacher"], linestyle="--", linewidth=1)
        ups = sum(b > a for _, a, b in pairs)
        ax.set_title(f"{method}: {ups} of {len(pairs)} seeds up", fontsize=9)
        ax.set_xticks([0, 1], ["student", f"distilled\n({method})"], fontsize=8)
        ax.set_xlim(-0.3, 1.3)
        ax.grid(axis="y", alpha=0.3)
        lines[method] = pairs
    axes[0][0].set_ylabel(f"{split} mIoU (%)")
    hollow = "; hollow: degenerate run" if degenerate else ""
    fig.suptitle(f"Student vs distilled, paired by seed ({split}); dashed: teacher{hollow}", fontsize=10)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return lines


def read_log(path) -> dict[str, np.ndarray]:
    """A train_log.csv / eval_log.csv as columns of floats."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise SegDistillError(f"{path}: cannot read the log ({exc})") from None
    if not rows:
        return {}
    return {k: np.asarray([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def _mean_curve(curves):
    """Mean over seeds on the iterations every seed logged (runs of one arm share their schedule)."""
    common = sorted(set.intersection(*[set(c[0].tolist()) for c in curves]))
    ys = np.stack([np.interp(common, c[0], c[1]) for c in curves])
    return np.asarray(common), ys.mean(0)


def curves(runs: dict[str, str], out_png) -> dict:
    """Loss and val mIoU against iteration, one colour per arm: thin lines per seed, thick line the mean.

    `runs` maps a run id (teacher/seed0, distilled/kl/seed1, ...) to its run folder.
    """
    from segdistill.study import parse_run

    groups: dict[str, dict[str, list]] = {}
    for run, folder in runs.items():
        info = parse_run(run)
        key = arm_label(info["arm"], info["method"])
        g = groups.setdefault(key, {"loss": [], "miou": []})
        tl, el = read_log(Path(folder) / "train_log.csv"), read_log(Path(folder) / "eval_log.csv")
        if "loss" in tl:
            g["loss"].append((tl["iter"], tl["loss"]))
        if "miou" in el:
            g["miou"].append((el["iter"], el["miou"]))
    if not groups:
        raise SegDistillError("no runs to plot")
    plt = _plt()
    colors = _colors(list(groups))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, g in groups.items():
        for ax, name, scale in ((axes[0], "loss", 1.0), (axes[1], "miou", 100.0)):
            if not g[name]:
                continue
            for it, y in g[name]:
                ax.plot(it, scale * y, color=colors[key], alpha=0.3, linewidth=0.8)
            it, y = _mean_curve(g[name])
            ax.plot(
                it,
                scale * y,
                color=colors[key],
                linewidth=2,
                marker="o" if len(it) < 15 else None,
                markersize=3,
                label=f"{key} (n={len(g[name])})",
            )
    axes[0].set(xlabel="iteration", ylabel="training loss (total, incl. distillation terms)", title="loss")
    axes[1].set(xlabel="iteration", ylabel="val mIoU (%)", title="val mIoU during training")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    _save(fig, out_png)
    plt.close(fig)
    return {k: {n: len(v) for n, v in g.items()} for k, g in groups.items()}


def _palette(num_classes: int):
    from matplotlib.colors import ListedColormap

    base = [(0, 0, 0), (1, 1, 1)] if num_classes <= 2 else None
    if base is None:
        import matplotlib

        base = [matplotlib.colormaps["tab10"](i % 10)[:3] for i in range(num_classes)]
    return ListedColormap(base)


def sample_grid(
    columns: list[tuple[str, str, str]], out_png, data_root=None, num_images: int = 4, split: str = HEADLINE_SPLIT
) -> dict:
    """N fixed images of `split` (its first N, in list order): image | ground truth | one column per model.

    `columns`: (title, config, weights) per model, in the order to show them.
    """
    from segdistill.paddle_env import paddle

    from segdistill.evaluate import build_split, predict
    from segdistill.models import load_trained
    from segdistill.paddleseg_yaml import build, ignore_index, num_classes

    if num_images < 1:
        raise SegDistillError(f"report.num_images must be at least 1, got {num_images}")
    paddle.set_device("cpu")
    models = []
    for title, config, weights in columns:
        model, dic = load_trained(config, weights, data_root)
        # Each model sees the split through its own val transforms (teacher and student may differ).
        models.append((title, model, build_split(build(dic, config), split)))
        if len(models) == 1:
            dic0 = dic
    ds = models[0][2]
    n = min(num_images, len(ds))
    if n == 0:
        raise SegDistillError(f"the {split} split is empty; no images to show")
    k = num_classes(dic0)
    ign = ignore_index(dic0)
    import cv2

    rows = []
    for i in range(n):
        img_path = ds.file_list[i][0]
        image = cv2.imread(img_path, cv2.IMREAD_COLOR)
        if image is None:
            raise SegDistillError(f"{img_path}: cannot read the image")
        label = np.asarray(ds[i]["label"]).astype("int64")
        label = label.reshape(label.shape[-2:])
        preds = []
        for _, model, mds in models:
            x = paddle.to_tensor(np.asarray(mds[i]["img"], dtype="float32")[None])
            with paddle.no_grad():
                preds.append(predict(model, x, label.shape).numpy()[0])
        rows.append((os.path.basename(img_path), image[:, :, ::-1], label, preds))
    plt = _plt()
    cmap = _palette(k)
    titles = ["image", "ground truth"] + [c[0] for c in columns]
    fig, axes = plt.subplots(n, len(titles), figsize=(1.9 * len(titles), 1.9 * n + 0.4), squeeze=False)
    for r, (name, image, label, preds) in enumerate(rows):
        shown = np.where(label == ign, 0, label)
        panels = [image, shown] + preds
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            if c == 0:
                ax.imshow(panel)
            else:
                ax.imshow(panel, cmap=cmap, vmin=0, vmax=k - 1, interpolation="nearest")
            if c >= 2:
                inter = np.logical_and(panel == 1, label == 1).sum() if k == 2 else None
                union = np.logical_or(panel == 1, label == 1).sum() if k == 2 else None
                if k == 2 and union:
                    ax.set_xlabel(f"class-1 IoU {100 * inter / union:.0f}%", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        axes[r][0].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return {"images": [r[0] for r in rows], "columns": titles}


def exported_samples(
    export_json,
    out_png,
    teacher_config,
    student_config,
    teacher_runs: dict,
    run_models: dict,
    data_root=None,
    num_images: int = 4,
    split: str = HEADLINE_SPLIT,
) -> dict:
    """`sample_grid` for the exported (best) distilled run: teacher | student of the same seed | that run.

    `teacher_runs` maps a seed to the run id of its teacher, `run_models` a run id to its weights; the exported
    run is only known once export.json exists, hence the lookup here rather than in the workflow.
    """
    import json

    from segdistill.study import parse_run

    best = json.loads(Path(export_json).read_text())["run"]
    info = parse_run(best)
    seed = info["seed"]
    columns = [
        ("teacher", teacher_config, run_models[teacher_runs[seed]]),
        (f"student (seed {seed})", student_config, run_models[f"student/seed{seed}"]),
        (f"distilled {info['method']} (seed {seed})", student_config, run_models[best]),
    ]
    return sample_grid(columns, out_png, data_root=data_root, num_images=num_images, split=split)
