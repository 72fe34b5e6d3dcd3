"""The report's figures, one row each: a new figure is its function, its row here and its test.

A row names the figure (its file `results/report/figures/<name>.png`, its `segdistill figure <name>`), the
function that draws it (`module:function` in segdistill.report, called with the row's arguments by name and
`out_png`), those arguments, its caption (the Snakemake report's, `{name}` fields filled from the arguments) and
its title on the overview page (none: not shown there). The workflow's one figure rule and script
(rules/report.smk) and the command line read this table; what each argument is in a study (a file to wait for, a
value) is said once, beside the report rules.

No paddle or matplotlib at import: the workflow reads this table while it parses.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from segdistill.errors import SegDistillError
from segdistill.report.names import HEADLINE_SPLIT


@dataclass(frozen=True)
class Figure:
    name: str
    function: str
    arguments: tuple[str, ...]
    caption: str
    overview: str | None = None
    sweep_only: bool = False  # drawn only for a sweep over one or two parameters (`drawn`)

    def draw(self, out_png, **arguments):
        """Call the figure's function with its arguments (every one of the row's, no other) and `out_png`."""
        missing = [a for a in self.arguments if a not in arguments]
        extra = [a for a in arguments if a not in self.arguments]
        if missing or extra:
            raise SegDistillError(
                f"figure {self.name}: "
                + "; ".join(
                    ([f"missing {', '.join(missing)}"] if missing else [])
                    + ([f"takes no {', '.join(extra)}"] if extra else [])
                )
            )
        module, function = self.function.split(":")
        return getattr(importlib.import_module(f"segdistill.report.{module}"), function)(**arguments, out_png=out_png)

    def draw_from_flags(self, out_png, flags: dict):
        """`draw` with the command line's flags (`ARGUMENTS`: a missing one without a default is named; pairs
        become a mapping)."""
        values = {a: flags.get(a) for a in self.arguments}
        missing = [a for a, v in values.items() if v is None and ARGUMENTS[a].default is ...]
        if missing:
            raise SegDistillError(f"figure {self.name}: --{', --'.join(missing)} required")
        for a, v in values.items():
            if ARGUMENTS[a].pairs:
                values[a] = {ARGUMENTS[a].key(k): x for k, x in v}
        return self.draw(out_png, **values)

    def caption_text(self, **arguments) -> str:
        return self.caption.format(**arguments)


# The overview page shows its figures in this order.
FIGURES = {
    f.name: f
    for f in (
        Figure(
            "forest",
            "arm_figures:forest",
            ("stats_json",),
            "The gain of every distilled arm over the student (mIoU points, paired by seed). Thick: the "
            "family-adjusted interval the verdict uses (with k arms, each at level 1 − 0.05/k, so that all k hold "
            "together with 95%); thin grey: the unadjusted 95% interval. Green: the adjusted interval lies above 0 "
            "(a gain); red: below (a loss).",
            overview="Gain per arm with its family-adjusted interval",
        ),
        Figure(
            "sweep",
            "arm_figures:sweep_grid",
            ("stats_json",),
            "The gain over the student across the sweep grid (mIoU points), with the family-adjusted intervals. A "
            "2-D sweep is a heat map; framed cells have an adjusted interval above 0. The marked point is the "
            "setting chosen on val.",
            overview="Gain over the sweep grid",
            sweep_only=True,
        ),
        Figure(
            "paired",
            "figures:paired_lines",
            ("summary_csv", "split", "stats_json"),
            "Student vs each distilled arm on the {split} split, one line per seed (same seed: same data order and "
            "student initialisation); green lines go up, red go down. Dashed: the teacher. Hollow: a degenerate run "
            "(within 1 mIoU point of predicting the most frequent class everywhere).",
            overview="Student vs distilled, paired by seed",
        ),
        Figure(
            "arm_means",
            "figures:arm_means",
            ("summary_csv", "split"),
            "mIoU per arm on the {split} split: the black point is the mean over seeds with its 95% Student "
            "t-interval (none with one seed), the coloured dots are single seeds. The axis spans the data, not "
            "zero.",
            overview="mIoU per arm with 95% intervals",
        ),
        Figure(
            "curves",
            "figures:curves",
            ("runs",),
            "Training curves per arm: total training loss (for distilled arms it includes the weighted "
            "distillation terms, so its level is not comparable with the others) and val mIoU at every "
            "evaluation. Thin lines: single seeds; thick lines: the mean over seeds.",
        ),
        Figure(
            "samples",
            "figures:exported_samples",
            (
                "export_json",
                "teacher_config",
                "student_config",
                "teacher_runs",
                "run_models",
                "data_root",
                "num_images",
                "split",
            ),
            "The first {num_images} images of the {split} split: image, ground truth, and the predictions of the "
            "teacher, the student and the exported (best) distilled student of the same seed. Below each "
            "prediction: its IoU of class 1 on that image (two-class studies).",
        ),
    )
}


@dataclass(frozen=True)
class Argument:
    """How the command line reads a figure argument: its help, its default (required when it has none), its
    type, or a mapping given as `pairs` (KEY VALUE, repeated; `key` converts the key)."""

    help: str
    default: object = ...
    type: type = str
    pairs: tuple[str, str] | None = None
    key: type = str


ARGUMENTS = {
    "summary_csv": Argument("summary.csv (segdistill summary)"),
    "stats_json": Argument("stats.json (segdistill stats)"),
    "split": Argument("the report split", default=HEADLINE_SPLIT),
    "runs": Argument("a run id and its run folder", pairs=("RUN", "DIR")),
    "export_json": Argument("export.json: the exported (best) distilled run"),
    "teacher_config": Argument("the teacher's PaddleSeg YAML"),
    "student_config": Argument("the student's PaddleSeg YAML"),
    "teacher_runs": Argument("a seed and the run id of its teacher", pairs=("SEED", "RUN"), key=int),
    "run_models": Argument("a run id and its weights (model.pdparams)", pairs=("RUN", "WEIGHTS")),
    "data_root": Argument("the data set's folder", default=None),
    "num_images": Argument("images drawn", default=4, type=int),
}


def drawn(sweep: dict | None) -> list[Figure]:
    """The figures a study draws: the sweep's only for a sweep over one or two parameters."""
    with_sweep = bool(sweep) and len(sweep["grid"]) <= 2
    return [f for f in FIGURES.values() if with_sweep or not f.sweep_only]


def overview_figures(pngs) -> list[tuple[str, str]]:
    """(title, png) of the figures among `pngs` (paths named <figure>.png) the overview page shows, in the
    table's order."""
    from pathlib import Path

    by_name = {Path(p).stem: str(p) for p in pngs}
    unknown = sorted(set(by_name) - set(FIGURES))
    if unknown:
        raise SegDistillError(f"not a report figure: {', '.join(unknown)} (figures: {', '.join(FIGURES)})")
    return [(f.overview, by_name[n]) for n, f in FIGURES.items() if n in by_name and f.overview]
