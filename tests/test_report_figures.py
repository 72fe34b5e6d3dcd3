"""Figures: the bar chart's numbers per arm, curves from training logs, and images that are not blank."""

import numpy as np
import pandas as pd
import pytest

from segdistill.errors import SegDistillError
from segdistill.report import figures


def pixels(path):
    import matplotlib.image as mpimg

    return mpimg.imread(str(path))


def _summary(tmp_path):
    rows = [
        ("teacher", "none", 0, 0.80),
        ("student", "none", 0, 0.60),
        ("student", "none", 1, 0.70),
        ("distilled", "kl", 0, 0.64),
        ("distilled", "kl", 1, 0.68),
        ("student", "none", 0, 0.1),
    ]
    df = pd.DataFrame(rows, columns=["arm", "method", "seed", "miou"])
    df["split"] = ["test"] * 5 + ["val"]
    csv = tmp_path / "summary.csv"
    df.to_csv(csv, index=False)
    return csv


def test_arm_means_with_intervals(tmp_path):
    csv = _summary(tmp_path)
    out = tmp_path / "fig/means.png"
    arms = figures.arm_means(csv, out)
    assert [a["label"] for a in arms] == ["teacher", "student", "distilled (kl)"]
    assert arms[1]["mean"] == pytest.approx(0.65) and arms[1]["std"] == pytest.approx(np.sqrt(0.005))
    # t(0.975, 1) = 12.706; sd / sqrt(2) = 0.05
    assert arms[1]["ci_low"] == pytest.approx(0.65 - 12.706204736 * 0.05)
    assert arms[0]["n"] == 1 and np.isnan(arms[0]["std"]) and np.isnan(arms[0]["ci_low"])
    img = pixels(out)
    assert img.shape[0] > 100 and img[..., :3].std() > 0.05
    with pytest.raises(SegDistillError, match="summary.csv: no rows for the 'val2' split"):
        figures.arm_means(csv, out, split="val2")


def test_paired_lines_one_per_seed(tmp_path):
    csv = _summary(tmp_path)
    out = tmp_path / "paired.png"
    lines = figures.paired_lines(csv, out)
    assert lines == {
        "kl": [(0, pytest.approx(0.60), pytest.approx(0.64)), (1, pytest.approx(0.70), pytest.approx(0.68))]
    }
    assert pixels(out)[..., :3].std() > 0.05
    with pytest.raises(SegDistillError, match="needs student and distilled rows on 'val'"):
        figures.paired_lines(csv, out, split="val")


def test_curves_from_logs(tmp_path):
    runs = {}
    for run, loss0 in (
        ("teacher/seed0", 2.0),
        ("student/seed0", 1.5),
        ("student/seed1", 1.7),
        ("distilled/kl/seed0", 3.0),
    ):
        d = tmp_path / run
        d.mkdir(parents=True)
        (d / "train_log.csv").write_text(
            "iter,loss,ce,lr\n" + "".join(f"{i},{loss0 / i},{loss0 / i},0.01\n" for i in (1, 2, 3, 4))
        )
        (d / "eval_log.csv").write_text("iter,miou,acc,kappa,dice\n2,0.4,0.9,0.1,0.5\n4,0.6,0.95,0.3,0.7\n")
        runs[run] = str(d)
    out = tmp_path / "curves.png"
    counts = figures.curves(runs, out)
    assert counts == {
        "teacher": {"loss": 1, "miou": 1},
        "student": {"loss": 2, "miou": 2},
        "distilled (kl)": {"loss": 1, "miou": 1},
    }
    assert pixels(out)[..., :3].std() > 0.05


def test_mean_curve_over_seeds():
    it, y = figures._mean_curve(
        [(np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0])), (np.array([1, 2, 3]), np.array([3.0, 4.0, 5.0]))]
    )
    assert it.tolist() == [1, 2, 3] and y.tolist() == [2.0, 3.0, 4.0]


def test_the_figure_table_names_each_function_with_its_arguments():
    """A row's arguments are its function's (besides out_png), each one the command line can read: the workflow
    and the command line call every figure through its row."""
    import inspect

    from segdistill.report.figure_table import ARGUMENTS, FIGURES

    for figure in FIGURES.values():
        module, name = figure.function.split(":")
        params = inspect.signature(getattr(__import__(f"segdistill.report.{module}", fromlist=[name]), name)).parameters
        required = {p for p, v in params.items() if v.default is inspect.Parameter.empty}
        assert required - {"out_png"} <= set(figure.arguments) <= set(params), figure.name
        assert set(figure.arguments) <= set(ARGUMENTS), figure.name
        figure.caption_text(**{a: "x" for a in figure.arguments})  # every field of the caption is an argument


def test_the_command_line_draws_a_figure_as_its_row_does(tmp_path):
    from segdistill import cli
    from segdistill.report.figure_table import FIGURES, overview_figures

    csv = _summary(tmp_path)
    args = cli.parser().parse_args(["figure", "arm_means", "--summary_csv", str(csv), "--out", str(tmp_path / "c.png")])
    args.func(args)
    FIGURES["arm_means"].draw(tmp_path / "r.png", summary_csv=csv, split="test")
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "r.png").read_bytes()
    with pytest.raises(SegDistillError, match="figure arm_means: missing split"):
        FIGURES["arm_means"].draw(tmp_path / "x.png", summary_csv=csv)
    args = cli.parser().parse_args(["figure", "paired", "--out", str(tmp_path / "p.png")])
    with pytest.raises(SegDistillError, match="figure paired: --summary_csv, --stats_json required"):
        args.func(args)
    pngs = [tmp_path / "curves.png", tmp_path / "arm_means.png", tmp_path / "forest.png"]
    assert overview_figures(pngs) == [
        ("Gain per arm with its family-adjusted interval", str(pngs[2])),
        ("mIoU per arm with 95% intervals", str(pngs[1])),
    ]
    with pytest.raises(SegDistillError, match="not a report figure: means"):
        overview_figures([tmp_path / "means.png"])
