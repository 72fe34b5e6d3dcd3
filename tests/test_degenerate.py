"""Degenerate runs are said: a run whose mIoU is no more than 1 point above predicting the split's most frequent
class everywhere is counted per arm, marked in the runs table and the paired plot, and named by the verdict,
which keeps it."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_records
from segdistill.evaluate import metrics_record
from segdistill.metrics import ConfusionMatrix, majority_miou
from segdistill.report import figures, stats
from segdistill.report.records import rows_from_evals, rows_from_records
from segdistill.report.summary import markdown, write_summary


def test_majority_miou_is_the_miou_of_predicting_the_most_frequent_class_everywhere():
    """Against the metric itself: a confusion matrix fed the labels and a constant prediction."""
    rng = np.random.default_rng(0)
    for probs in ([0.9, 0.1], [0.0, 0.3, 0.7], [0.2, 0.5, 0.3, 0.0]):
        labels = rng.choice(len(probs), size=(4, 16, 16), p=probs)
        labels[0, 0, :3] = 255  # ignored pixels count nowhere
        cm = ConfusionMatrix(len(probs)).update(np.zeros_like(labels), labels)  # class 0 everywhere...
        counts = cm.matrix.sum(axis=1)
        constant = np.full_like(labels, int(np.argmax(counts)))
        expected = ConfusionMatrix(len(probs)).update(constant, labels).compute()["miou"]
        assert majority_miou(counts) == pytest.approx(expected), probs
    assert majority_miou([900, 100]) == pytest.approx(0.45)  # IoU 0.9 and 0, by hand
    assert majority_miou([0, 30, 70]) == pytest.approx(0.35)  # the absent class is left out


def test_the_evaluation_record_holds_the_label_histogram():
    labels = np.array([[0, 0, 1], [1, 1, 255]])
    cm = ConfusionMatrix(2).update(np.zeros_like(labels), labels)
    assert metrics_record(cm, ["bg", "disc"])["class_pixels"] == {"bg": 2, "disc": 3}


def record(run, miou, pixels=(900, 100), split="test"):
    arm, *rest = run.split("/")
    m = {
        "miou": miou,
        "acc": 0.9,
        "kappa": 0.5,
        "dice": 0.6,
        "num_pixels": sum(pixels or (1000,)),
        "class_iou": {"bg": 0.9, "disc": miou},
        "class_dice": {"bg": 0.9, "disc": 0.5},
        **({"class_pixels": {"bg": pixels[0], "disc": pixels[1]}} if pixels else {}),
    }
    return {
        "run": run,
        "arm": arm,
        "method": rest[0] if arm == "distilled" else "none",
        "seed": int(run.rsplit("seed", 1)[1]),
        "splits": {split: m},
    }


# Predicting background everywhere scores 0.45 here: 0.46 is exactly 1 point above it (degenerate), 0.4601 is not.
RUNS = [
    record("teacher/seed0", 0.80),
    record("student/seed0", 0.60),
    record("student/seed1", 0.46),
    record("student/seed2", 0.4601),
    record("distilled/kl/seed0", 0.66),
    record("distilled/kl/seed1", 0.62),
    record("distilled/kl/seed2", 0.30),
]


def test_the_rule_at_the_boundary():
    found = stats.degenerate_runs(rows_from_records(RUNS), "test")
    assert [(d["run"], d["majority_miou"]) for d in found] == [
        ("student/seed1", pytest.approx(0.45)),
        ("distilled/kl/seed2", pytest.approx(0.45)),
    ]
    other = [record("student/seed0", 0.40, pixels=(500, 500))]  # majority 0.25: 0.40 is 15 points above
    assert stats.degenerate_runs(rows_from_records(other), "test") == []
    assert stats.degenerate_runs(rows_from_records([record("student/seed0", 0.4, pixels=None)]), "test") is None


def test_the_report_counts_marks_and_names_them_and_the_gain_keeps_them(tmp_path):
    paths = write_records(tmp_path, RUNS)
    df = rows_from_evals(paths)
    st = stats.stats_json(df, "test")
    assert {(a["arm"], a["method"]): a["degenerate"] for a in st["arms"]} == {
        ("teacher", "none"): 0,
        ("student", "none"): 1,
        ("distilled", "kl"): 1,
    }
    gain = next(g for g in st["gains"] if g["metric"] == "miou")
    assert gain["n"] == 3 and gain["mean"] == pytest.approx((0.06 + 0.16 - 0.1601) / 3)  # kept
    sentence = st["verdicts"][0]["sentence"]
    assert sentence.endswith("; 2 of its 6 runs degenerate, kept: student seed 1; distilled seed 2"), sentence
    (tmp_path / "stats.json").write_text(json.dumps(st))
    write_summary(paths, tmp_path / "stats.json", tmp_path / "summary.csv", tmp_path / "summary.md", "test")
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith(f"- {sentence}\n")
    assert "| arm | n | degenerate | mIoU | acc | kappa | dice |" in md
    assert "| student | 3 | 1 | " in md and "| distilled (kl) | 3 | 1 | " in md
    runs = [ln for ln in md.splitlines() if ln.startswith(("| student | none |", "| distilled | kl |"))]
    assert [ln.rstrip(" |").endswith("yes") for ln in runs] == [False, True, False, False, False, True]
    # summary.csv keeps its columns: the histogram's score is not one of them.
    assert list(pd.read_csv(tmp_path / "summary.csv").columns) == [
        "run", "arm", "method", "seed", "split", "miou", "acc", "kappa", "dice",
        "iou_bg", "iou_disc", "dice_bg", "dice_disc",
    ]  # fmt: skip


def test_records_without_a_histogram_say_nothing_rather_than_guess(tmp_path):
    recs = [record(r["run"], r["splits"]["test"]["miou"], pixels=None) for r in RUNS]
    df = rows_from_evals(write_records(tmp_path, recs))
    st = stats.stats_json(df, "test")
    assert all(a["degenerate"] is None for a in st["arms"]) and st["degenerate"]["runs"] is None
    assert "degenerate" not in st["verdicts"][0]["sentence"]
    md = markdown(df, st)
    assert "| student | 3 | n/a | " in md


def test_the_paired_plot_marks_degenerate_runs(tmp_path):
    paths = write_records(tmp_path, RUNS)
    written = stats.write_stats(paths, tmp_path / "stats.json", "test")
    assert written["degenerate"]["runs"]
    write_summary(paths, tmp_path / "stats.json", tmp_path / "summary.csv", tmp_path / "summary.md", "test")
    assert figures.degenerate_marks(tmp_path / "stats.json") == {("student", "none", 1), ("distilled", "kl", 2)}
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    lines = figures.paired_lines(tmp_path / "summary.csv", plain, "test")
    assert figures.paired_lines(tmp_path / "summary.csv", marked, "test", stats_json=tmp_path / "stats.json") == lines
    assert plain.read_bytes() != marked.read_bytes()
