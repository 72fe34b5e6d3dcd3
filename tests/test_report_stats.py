"""Statistics of the report against hand-computed values: mean ± std, the paired gain with its t-test and
interval (none for one seed), the verdict words, the best sweep setting, and stats.json / summary.md from
evaluation records."""

import json
import math

import pytest

from conftest import write_records
from segdistill.errors import SegDistillError
from segdistill.report import stats
from segdistill.report.records import rows_from_evals
from segdistill.report.summary import markdown

T975_DOF2 = 4.302652729911275  # Student t 0.975 quantile, 2 degrees of freedom (printed tables: 4.303)
T975_DOF1 = 12.706204736174705  # 1 degree of freedom (tables: 12.706)


def test_mean_std_by_hand():
    mean, std, n = stats.mean_std([0.60, 0.70, 0.65])
    assert n == 3
    assert mean == pytest.approx(0.65)
    # deviations -0.05, +0.05, 0 -> sum of squares 0.005, / (n - 1) = 0.0025 -> sd 0.05
    assert std == pytest.approx(0.05)
    one = stats.mean_std([0.7, float("nan"), None])
    assert one[0] == 0.7 and math.isnan(one[1]) and one[2] == 1


def test_paired_gain_three_seeds_by_hand():
    student = {0: 0.60, 1: 0.70, 2: 0.65}
    distilled = {0: 0.64, 1: 0.71, 2: 0.70}
    g = stats.paired_gain(distilled, student)
    # differences 0.04, 0.01, 0.05: mean 0.1/3; squared deviations sum 0.00086667; / 2 -> sd 0.020817
    d_mean = 0.1 / 3
    sd = math.sqrt(((0.04 - d_mean) ** 2 + (0.01 - d_mean) ** 2 + (0.05 - d_mean) ** 2) / 2)
    half = T975_DOF2 * sd / math.sqrt(3)
    assert g["n"] == 3 and g["seeds"] == [0, 1, 2]
    assert g["mean"] == pytest.approx(d_mean)
    assert g["std"] == pytest.approx(0.0208167, abs=1e-6)
    assert g["ci_low"] == pytest.approx(d_mean - half) and g["ci_low"] == pytest.approx(-0.018379, abs=1e-5)
    assert g["ci_high"] == pytest.approx(d_mean + half) and g["ci_high"] == pytest.approx(0.085046, abs=1e-5)


def test_paired_gain_matches_by_seed_not_position():
    student = {0: 0.5, 1: 0.6, 2: 0.9}
    distilled = {1: 0.7, 2: 0.8, 3: 0.1}  # seed 0 and 3 have no partner
    g = stats.paired_gain(distilled, student)
    assert g["seeds"] == [1, 2] and g["n"] == 2
    assert g["diffs"] == pytest.approx([0.1, -0.1])
    assert g["mean"] == pytest.approx(0.0)
    # sd of (0.1, -0.1) = sqrt(0.02 / 1); half width = t(0.975, 1) * sd / sqrt(2) = 12.7062 * 0.1
    assert g["ci_high"] == pytest.approx(T975_DOF1 * math.sqrt(0.02) / math.sqrt(2))


def test_paired_gain_one_seed_has_no_interval():
    g = stats.paired_gain({0: 0.72}, {0: 0.70})
    assert g["n"] == 1 and g["mean"] == pytest.approx(0.02)
    assert math.isnan(g["std"]) and math.isnan(g["ci_low"]) and math.isnan(g["ci_high"])
    assert stats.paired_gain({1: 0.7}, {0: 0.7})["n"] == 0


def test_parse_method_names_of_sweep_points():
    assert stats.parse_method("kl") == ("kl", {})
    assert stats.parse_method("kl_cwd~weight=2~cwd_aspp.temperature=0.5") == (
        "kl_cwd",
        {"weight": 2.0, "cwd_aspp.temperature": 0.5},
    )
    with pytest.raises(SegDistillError, match="not key=value"):
        stats.parse_method("kl~oops")


def _split(miou, acc=0.9, kappa=0.5, dice=0.6):
    return {
        "miou": miou,
        "acc": acc,
        "kappa": kappa,
        "dice": dice,
        "num_pixels": 100,
        "class_iou": {"bg": miou + 0.1, "disc": miou - 0.1},
        "class_dice": {"bg": dice, "disc": dice},
    }


def record(run, miou, acc=0.9, kappa=0.5, dice=0.6, split="test", val=None):
    """An evaluation record as `segdistill evaluate` writes it; `val`: the run's val mIoU, if evaluated."""
    arm, *rest = run.split("/")
    method = rest[0] if arm == "distilled" else "none"
    seed = int(run.rsplit("seed", 1)[1])
    splits = {split: _split(miou, acc, kappa, dice)} | ({"val": _split(val)} if val is not None else {})
    return {
        "run": run,
        "arm": arm,
        "method": method,
        "seed": seed,
        "config": "x.yml",
        "model": f"{run}.pdparams",
        "splits": splits,
    }


# test mIoU, val mIoU. On val: kl 0.60, kl~weight=1 0.655, kl~weight=3 0.65; on test kl~weight=3 has the
# best mean (0.75) and the best single run (0.80), which must not matter.
SWEEP = [
    record("teacher/seed0", 0.80, val=0.8),
    record("student/seed0", 0.60, val=0.6),
    record("student/seed1", 0.70, val=0.6),
    record("distilled/kl/seed0", 0.62, val=0.6),
    record("distilled/kl/seed1", 0.71, val=0.6),
    record("distilled/kl~weight=1/seed0", 0.66, val=0.64),
    record("distilled/kl~weight=1/seed1", 0.74, val=0.67),
    record("distilled/kl~weight=3/seed0", 0.80, val=0.70),
    record("distilled/kl~weight=3/seed1", 0.70, val=0.60),
]


def test_best_setting_and_run_are_chosen_on_val_not_test(tmp_path):
    df = rows_from_evals(write_records(tmp_path, SWEEP))
    best = stats.best_setting(df, "test")
    assert best["method"] == "kl~weight=1" and best["base"] == "kl" and best["params"] == {"weight": 1.0}
    assert best["chosen_on"] == "val" and best["selection"]["mean"] == pytest.approx(0.655)
    assert best["split"] == "test" and best["mean"] == pytest.approx(0.70) and best["n"] == 2
    assert best["candidates"] == 3
    # The exported run: the chosen arm's best val run (seed1, val 0.67), not the best test run of any arm.
    assert stats.best_run(df, best["method"], "test") == {
        "run": "distilled/kl~weight=1/seed1",
        "method": "kl~weight=1",
        "metric": "miou",
        "chosen_on": "val",
        "selection_value": pytest.approx(0.67),
        "split": "test",
        "value": pytest.approx(0.74),
    }
    # Changing test numbers changes no choice; changing val numbers does.
    shuffled = df.copy()
    shuffled.loc[shuffled.split == "test", "miou"] = shuffled.loc[shuffled.split == "test", "miou"].values[::-1]
    assert stats.best_setting(shuffled)["method"] == "kl~weight=1"
    assert stats.best_run(shuffled, "kl~weight=1")["run"] == "distilled/kl~weight=1/seed1"
    bumped = df.copy()
    bumped.loc[(bumped.split == "val") & (bumped.method == "kl"), "miou"] = 0.9
    assert stats.best_setting(bumped)["method"] == "kl"


def test_best_setting_tie_goes_to_first_name(tmp_path):
    recs = [
        record("student/seed0", 0.5, val=0.5),
        record("distilled/b/seed0", 0.7, val=0.7),
        record("distilled/a/seed0", 0.7, val=0.7),
    ]
    df = rows_from_evals(write_records(tmp_path, recs))
    assert stats.best_setting(df)["method"] == "a"
    assert stats.best_run(df, "a")["run"] == "distilled/a/seed0"


def test_no_val_evaluation_chooses_nothing(tmp_path):
    recs = [record("student/seed0", 0.5), record("distilled/a/seed0", 0.7)]
    data = stats.stats_json(rows_from_evals(write_records(tmp_path, recs)))
    assert data["best_setting"] is None and data["best_run"] is None
    assert "no setting is chosen" in markdown(rows_from_evals(write_records(tmp_path, recs)), data)


def test_stats_json_by_hand(tmp_path):
    out = tmp_path / "report/stats.json"
    res = stats.write_stats(write_records(tmp_path, SWEEP), out)
    text = out.read_text()
    assert "NaN" not in text  # strict JSON
    data = json.loads(text)
    assert data == res
    arms = {(a["arm"], a["method"]): a for a in data["arms"]}
    assert list(arms) == [
        ("teacher", "none"),
        ("student", "none"),
        ("distilled", "kl"),
        ("distilled", "kl~weight=1"),
        ("distilled", "kl~weight=3"),
    ]
    s = arms[("student", "none")]["metrics"]["miou"]
    assert s["mean"] == pytest.approx(0.65) and s["std"] == pytest.approx(math.sqrt(0.005)) and s["n"] == 2
    assert arms[("teacher", "none")]["metrics"]["miou"]["std"] is None  # n = 1
    assert arms[("student", "none")]["metrics"]["iou_disc"]["mean"] == pytest.approx(0.55)
    gains = {(g["method"], g["metric"]): g for g in data["gains"]}
    g = gains[("kl", "miou")]  # diffs 0.02, 0.01
    assert g["n"] == 2 and g["mean"] == pytest.approx(0.015)
    half = T975_DOF1 * math.sqrt(0.00005) / math.sqrt(2)
    assert g["ci_low"] == pytest.approx(0.015 - half) and g["ci_high"] == pytest.approx(0.015 + half)
    assert gains[("kl", "acc")]["mean"] == pytest.approx(0.0)
    assert data["best_setting"]["method"] == "kl~weight=1" and data["best_setting"]["chosen_on"] == "val"
    assert data["best_run"]["run"] == "distilled/kl~weight=1/seed1"
    # Three arms: one family of three comparisons with the student, three method pairs.
    assert data["family"]["members"] == 3 and data["pairs_family"] == 3
    assert gains[("kl", "miou")]["adjusted"]["confidence"] == pytest.approx(1 - 0.05 / 3)
    assert "adjusted" not in gains[("kl", "acc")]  # secondary metrics stay unadjusted


def test_one_seed_shows_no_interval_in_json_and_markdown(tmp_path):
    recs = [
        record("teacher/seed0", 0.8, val=0.8),
        record("student/seed0", 0.60, val=0.6),
        record("distilled/kl/seed0", 0.63, val=0.6),
    ]
    paths = write_records(tmp_path, recs)
    data = stats.write_stats(paths, tmp_path / "stats.json")
    g = next(g for g in data["gains"] if g["metric"] == "miou")
    assert g["n"] == 1 and g["mean"] == pytest.approx(0.03)
    assert g["ci_low"] is None and g["ci_high"] is None and g["std"] is None
    md = markdown(rows_from_evals(paths), data)
    assert "| kl | 1 | +3.00 | n/a (n < 2) | n/a |" in md
    assert md.splitlines()[0] == (
        "- kl: +3.00 mIoU points on test (n = 1): one seed has no interval: no verdict "
        "(run at least 2 seeds; 5 or more to detect 1-2 points)"
    )
    assert "Best setting" in md and "`kl`" in md


def test_missing_split_is_an_error(tmp_path):
    paths = write_records(tmp_path, [record("student/seed0", 0.6, split="val")])
    with pytest.raises(SegDistillError, match="'test' split"):
        stats.write_stats(paths, tmp_path / "stats.json")
    assert not (tmp_path / "stats.json").exists()


def test_p_value_and_interval_by_hand():
    """The scipy paired t-test against the textbook formulas: t = mean / (sd / sqrt(n)), p = 2 P(T > |t|)."""
    from scipy.stats import t as t_dist

    student = {0: 0.60, 1: 0.70, 2: 0.65, 3: 0.62, 4: 0.68}
    distilled = {0: 0.63, 1: 0.71, 2: 0.69, 3: 0.62, 4: 0.71}
    d = [0.03, 0.01, 0.04, 0.0, 0.03]
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    t = mean / (sd / math.sqrt(5))
    g = stats.paired_gain(distilled, student)
    assert g["p_value"] == pytest.approx(2 * t_dist.sf(abs(t), 4))
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, 4), tables: 2.776
    assert (g["ci_low"], g["ci_high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))


def _gain(diffs):
    student = {i: 0.5 for i in range(len(diffs))}
    return stats.paired_gain({i: 0.5 + d for i, d in enumerate(diffs)}, student)


@pytest.mark.parametrize(
    "diffs, kind, words",
    [
        ([0.020, 0.025, 0.015, 0.022, 0.018], "gain", ": a gain"),
        (
            [0.020, -0.015, 0.030, -0.010, 0.005],
            "no evidence",
            ": interval includes 0: no evidence of a gain at this sample size",
        ),
        ([-0.020, -0.025, -0.015, -0.022, -0.018], "loss", ": a loss"),
        ([0.02], "undetermined", ": one seed has no interval: no verdict"),
        ([0.01, 0.01, 0.01], "gain", ": a gain"),  # identical differences: a zero-width interval above 0
    ],
)
def test_verdict_words_for_each_case(diffs, kind, words):
    g = _gain(diffs)
    assert stats.verdict(g) == kind
    sentence = stats.verdict_sentence("kl", g, "test")
    assert sentence.startswith(f"kl: {100 * sum(diffs) / len(diffs):+.2f} mIoU points on test (")
    assert words in sentence
    if len(diffs) > 1:
        assert f"95% CI {100 * g['ci_low']:+.2f} to {100 * g['ci_high']:+.2f}, n = {len(diffs)}" in sentence
    assert stats.verdict(stats.paired_gain({}, {0: 0.5})) == "no data"


def test_verdicts_head_the_summary_and_val_is_labelled(tmp_path):
    recs = []
    for split, bump in (("test", 0.0), ("val", 0.05)):
        for s, (a, b) in enumerate([(0.60, 0.63), (0.70, 0.72), (0.65, 0.69)]):
            recs += [
                record(f"student/seed{s}", a + bump, split=split),
                record(f"distilled/kl/seed{s}", b + bump, split=split),
            ]
    paths = []
    for r in recs:  # one record per run holding both splits, as `segdistill evaluate` writes them
        p = tmp_path / (r["run"].replace("/", "_") + ".json")
        old = json.loads(p.read_text()) if p.exists() else None
        if old:
            old["splits"].update(r["splits"])
            r = old
        p.write_text(json.dumps(r))
        paths.append(p)
    df = rows_from_evals(sorted(set(paths)))
    md = markdown(df, stats.stats_json(df, "test"))
    assert md.startswith("- kl: +3.00 mIoU points on test (95% CI ")
    assert "## val (used to select checkpoints)" in md
    data = stats.study_stats(df, "test")
    assert data["split"] == "test" and not data["biased"] and data["selection"]["split"] == "val"
    assert [v["verdict"] for v in data["verdicts"]] == ["gain"]
    biased = markdown(df, stats.stats_json(df, "val"))
    assert biased.startswith("**Biased numbers:**") and "`val`" in biased.splitlines()[0]
    assert stats.study_stats(df, "val")["biased"] is True
    # A study without a selection split (data.paddleseg.selection_images 0) says its runs kept their final weights.
    assert "every run kept its final weights" not in md
    final = markdown(df, stats.stats_json(df, "test"), final_weights=True).splitlines()
    assert final[0].startswith("- kl: ") and "every run kept its final weights" in final[2]
