"""Statistics for many arms, checked where the truth is known: seeded Monte Carlo studies of simulated evaluation
records (segdistill's own record format, through the functions `segdistill stats` calls) for the family-wise
error, the power to find a real gain and the coverage of the simultaneous intervals; the adjustment, the
method-vs-method pairs, the robustness checks and the power line against statsmodels/scipy and textbook cases;
and the report of config/kl_cwd.yaml's arms rendered from simulated records."""

import json
import math

import numpy as np
import pytest
import yaml

from conftest import ROOT, write_records
from segdistill import study
from segdistill.errors import SegDistillError
from segdistill.report import arm_figures, family, robustness, stats
from segdistill.report.names import HEADLINE_SPLIT
from segdistill.report.records import rows_from_records
from segdistill.report.summary import write_summary

ARMS, SEEDS, STUDIES = 12, 8, 300


def _split(miou):
    return {"miou": float(miou), "acc": 0.9, "kappa": 0.5, "dice": 0.6, "class_iou": {}, "class_dice": {}}


def sim_records(rng, gains: dict[str, float], seeds: int, sd: float = 0.01, seed_sd: float = 0.02) -> list[dict]:
    """Records of one simulated study: a student and one arm per entry of `gains` (its true mean gain, mIoU
    fraction). A seed shifts every arm alike (shared data order and initialisation), plus independent noise;
    val and test are drawn independently with the same truth."""
    recs = []
    for s in range(seeds):
        shift = {sp: rng.normal(0, seed_sd) for sp in ("val", "test")}
        arms = [("student", "none", 0.0)] + [("distilled", m, g) for m, g in gains.items()]
        for arm, method, g in arms:
            splits = {sp: _split(0.7 + shift[sp] + g + rng.normal(0, sd)) for sp in ("val", "test")}
            run = f"{arm}/seed{s}" if arm == "student" else f"distilled/{method}/seed{s}"
            recs.append({"run": run, "arm": arm, "method": method, "seed": s, "splits": splits})
    return recs


def sweep_names(k: int) -> list[str]:
    """Arm names as `study.methods` names a sweep: kl_cwd~weight=..."""
    return [f"kl_cwd~weight={w}" for w in range(1, k + 1)]


def run_studies(gains: dict[str, float], studies: int = STUDIES, seed: int = 20):
    """The verdict tables of `studies` simulated studies. statsmodels' Holm calls gc.collect() on every call,
    which walks every object of the test session; frozen objects are skipped, so the loop runs in seconds."""
    import gc

    rng = np.random.default_rng(seed)
    gc.freeze()
    try:
        for _ in range(studies):
            df = rows_from_records(sim_records(rng, gains, SEEDS))
            yield stats.adjusted_gains(df, "test", metrics=("miou",))
    finally:
        gc.unfreeze()


def test_null_sweep_false_gains_at_most_5_percent():
    """12 arms, no true gain: the adjusted verdicts call a "gain" in at most 5% of studies, while the
    unadjusted intervals do so far more often (so this test can tell the two apart)."""
    gains = dict.fromkeys(sweep_names(ARMS), 0.0)
    adjusted = unadjusted = 0
    for table in run_studies(gains):
        assert len(table) == ARMS and table[0]["adjusted"]["family_size"] == ARMS
        adjusted += any(stats.verdict(g) == "gain" for g in table)
        unadjusted += any(g["ci_low"] > 0 for g in table)
    assert adjusted / STUDIES <= 0.05
    assert unadjusted / STUDIES > 0.10  # 1 - 0.975^12 = 26% for independent arms; the shared student lowers it


def test_a_true_large_gain_among_null_arms_is_found():
    names = sweep_names(ARMS)
    # 4 mIoU points = 2.8 sd of the per-seed differences (noise sd 1 point on each side): power ~0.99 at α/12
    gains = dict.fromkeys(names, 0.0) | {names[5]: 0.04}
    found = false = 0
    for table in run_studies(gains, studies=200, seed=21):
        v = {g["method"]: stats.verdict(g) for g in table}
        found += v[names[5]] == "gain"
        false += any(v[m] == "gain" for m in names if m != names[5])
    assert found / 200 >= 0.9
    assert false / 200 <= 0.05


def test_simultaneous_intervals_cover_all_true_gains():
    """All 12 adjusted intervals hold their arm's true gain together in at least ~95% of studies (Bonferroni
    is conservative; the bound leaves room for Monte Carlo error, se ≈ 1.3% at 300 studies)."""
    names = sweep_names(ARMS)
    truth = {m: 0.005 * (i % 4) for i, m in enumerate(names)}
    covered = single = 0
    for table in run_studies(truth, seed=22):
        covered += all(g["adjusted"]["ci_low"] <= truth[g["method"]] <= g["adjusted"]["ci_high"] for g in table)
        single += all(g["ci_low"] <= truth[g["method"]] <= g["ci_high"] for g in table)
    assert covered / STUDIES >= 0.93
    assert single / STUDIES < 0.85  # unadjusted 95% intervals miss one of twelve far more often


def test_one_arm_changes_nothing():
    """With one distilled arm the adjusted numbers are the plain ones and the verdict line is unchanged."""
    rng = np.random.default_rng(3)
    df = rows_from_records(sim_records(rng, {"kl": 0.01}, 5))
    st = stats.study_stats(df)
    g = next(g for g in st["gains"] if g["metric"] == "miou")
    test = df[df.split == "test"]
    plain = stats.paired_gain(
        *[dict(zip(x.seed, x.miou)) for x in (test[test.method == "kl"], test[test.arm == "student"])]
    )
    adj = g["adjusted"]
    assert adj["family_size"] == 1 and adj["confidence"] == pytest.approx(0.95)
    assert (adj["ci_low"], adj["ci_high"], adj["p_value"]) == (
        pytest.approx(plain["ci_low"]),
        pytest.approx(plain["ci_high"]),
        pytest.approx(plain["p_value"]),
    )
    assert st["verdicts"][0]["sentence"] == stats.verdict_sentence("kl", plain, "test")
    assert st["pairs"] == [] and st["ranking"] == []


def test_holm_and_bonferroni_by_hand():
    """Holm: sorted p 0.01, 0.03, 0.04 -> 3·0.01, max(0.03, 2·0.03), max(0.06, 0.04) = 0.03, 0.06, 0.06."""
    assert family.holm([0.01, 0.04, 0.03, math.nan], 0.05)[:3] == pytest.approx([0.03, 0.06, 0.06])
    from scipy.stats import t

    d = [0.01, 0.03, 0.02, 0.04, 0.00]
    tests = [{"diffs": d, "p_value": 0.01}, {"diffs": d, "p_value": 0.2}, {"diffs": [0.1], "p_value": math.nan}]
    assert family.adjust(tests, 0.05) == 2  # the one-seed comparison is not tested, so not counted
    mean, sd = np.mean(d), np.std(d, ddof=1)
    half = t.ppf(1 - 0.05 / 4, 4) * sd / math.sqrt(5)  # two-sided at 1 - 0.05/2
    assert tests[0]["adjusted"]["ci_low"] == pytest.approx(mean - half)
    assert tests[0]["adjusted"]["confidence"] == pytest.approx(0.975)
    assert math.isnan(tests[2]["adjusted"]["p_value"])


def test_verdict_from_adjusted_interval_and_its_words():
    g = stats.paired_gain(
        {i: 0.5 + d for i, d in enumerate([0.02, 0.025, 0.015, 0.022, 0.018])}, dict.fromkeys(range(5), 0.5)
    )
    assert stats.verdict(g) == "gain"
    g["adjusted"] = {"ci_low": -0.001, "ci_high": 0.04, "p_value": 0.07, "confidence": 1 - 0.05 / 12, "family_size": 12}
    assert stats.verdict(g) == "no evidence"
    sentence = stats.verdict_sentence("kl", g, "test")
    assert "(simultaneous 95% CI -0.10 to +4.00 for 12 arms, n = 5, Holm p = 0.07): interval includes 0" in sentence


def test_method_pairs_and_ranking():
    # a beats b by 2 points on every seed (with a little noise); c is b with noise.
    b = {s: 0.6 + 0.01 * s for s in range(6)}
    a = {s: v + 0.02 + 0.001 * (-1) ** s for s, v in b.items()}
    c = {s: v + 0.002 * (-1) ** s for s, v in b.items()}
    pairs = family.method_pairs({"b": b, "a": a, "c": c}, 0.05)
    by = {(p["a"], p["b"]): p for p in pairs}
    assert set(by) == {("a", "b"), ("c", "b"), ("c", "a")} and pairs[0]["adjusted"]["family_size"] == 3
    assert by[("a", "b")]["verdict"] == "a is better" and by[("c", "a")]["verdict"] == "a is better"
    assert by[("c", "b")]["verdict"] == "no evidence of a difference"
    assert by[("a", "b")]["sentence"].startswith("a − b: +2.00 mIoU points (simultaneous 95% CI ")
    means = {m: float(np.mean(list(v.values()))) for m, v in (("a", a), ("b", b), ("c", c))}
    rank = family.ranking(means, pairs)
    # b and c have the same mean: the tie goes to the name that sorts first.
    assert [(r["method"], r["status"]) for r in rank] == [("a", "top"), ("b", "below the top"), ("c", "below the top")]
    close = family.ranking({"a": 0.62, "c": 0.61, "b": 0.6}, [by[("c", "b")] | {"a": "c", "b": "a"}])
    assert close[1]["status"] == "cannot be separated from the top"


def test_bootstrap_and_wilcoxon_against_scipy():
    from scipy import stats as st

    d = np.array([0.012, 0.02, 0.018, 0.01, 0.025, 0.014, 0.02, 0.017])
    boot = robustness.bootstrap_interval(d, 0.95)
    ref = st.bootstrap((d,), np.mean, method="BCa", n_resamples=9999, random_state=np.random.default_rng(0))
    assert (boot["ci_low"], boot["ci_high"]) == (
        pytest.approx(ref.confidence_interval.low),
        pytest.approx(ref.confidence_interval.high),
    )
    assert robustness.bootstrap_interval(d, 0.95) == boot  # fixed seed: stats.json is the same every run
    assert robustness.wilcoxon_p(d)[0] == pytest.approx(st.wilcoxon(d).pvalue) == pytest.approx(2 / 2**8)
    # The cases where BCa cannot be computed say why instead of giving an interval.
    assert "needs at least 3" in robustness.bootstrap_interval([0.01, 0.02], 0.95)["reason"]
    assert "identical" in robustness.bootstrap_interval([0.01] * 5, 0.95)["reason"]
    assert math.isnan(robustness.bootstrap_interval([0.01] * 5, 0.95)["ci_low"])


def _robust(diffs, k=1):
    g = {"method": "kl", "diffs": diffs, **family.diff_test(diffs, 0.95)}
    family.adjust([g] + [{"diffs": [0.0, 0.1], "p_value": 0.9}] * (k - 1), 0.05)
    return robustness.robustness([g], 0.05)[0]


def test_checks_agree_disagree_and_floor_in_words():
    clear = _robust([0.012, 0.02, 0.018, 0.01, 0.025, 0.014, 0.02, 0.017])
    assert clear["verdicts"] == {"t": "a gain", "bootstrap": "a gain", "wilcoxon": "a gain"}
    assert clear["agreement"] == "the checks agree"
    # One seed far above the rest: the t-interval widens across 0, while all 8 seeds went up.
    outlier = _robust([0.001, 0.002, 0.001, 0.002, 0.001, 0.002, 0.001, 0.03])
    assert outlier["verdicts"] == {"t": "no evidence", "bootstrap": "a gain", "wilcoxon": "a gain"}
    assert outlier["agreement"].startswith("the checks disagree (t: no evidence; ")
    assert "trust the most cautious verdict" in outlier["agreement"]
    # 5 seeds in a family of 12: the smallest Wilcoxon p (2/32) cannot reach 0.05/12, and the report says so.
    few = _robust([0.02, 0.021, 0.019, 0.022, 0.018], k=12)
    assert "Wilcoxon cannot reach p < 0.0042 with 5 seeds (smallest p 0.062)" in few["agreement"]
    # Nearly two-valued gains (three seeds exactly 0): Wilcoxon drops the zeros and has 5 seeds left.
    two = _robust([0.0, 0.0, 0.0, 0.01, 0.01, 0.01, 0.01, 0.01])
    assert two["verdicts"]["t"] == "a gain" and two["wilcoxon"]["smallest_p"] == pytest.approx(2 / 2**5)
    assert "Wilcoxon cannot reach p < 0.05 with 5 seeds" in two["agreement"]


def test_power_line_against_statsmodels_and_textbook():
    from statsmodels.stats.power import TTestPower

    # Where solve_power works, the same answer; and the textbook case: d = 0.5, α = 0.05, 80% -> 34 (33.4).
    assert robustness.detectable_effect(8, 0.05) == pytest.approx(
        TTestPower().solve_power(nobs=8, alpha=0.05, power=0.8), rel=1e-6
    )
    assert robustness.seeds_needed(0.5, 0.05) == 34
    # 2 seeds at α/12: solve_power stops at its bound of 10; the root found instead has 80% power.
    es = robustness.detectable_effect(2, 0.05 / 12)
    assert es > 10 and robustness._power(es, 2, 0.05 / 12) == pytest.approx(0.8, abs=1e-3)
    g = {"method": "kl", "mean": 0.01, "std": 0.02, "n": 8, "adjusted": {"family_size": 1}}
    line = robustness.power_line(g, 0.05)
    assert line["detectable"] == pytest.approx(robustness.detectable_effect(8, 0.05) * 0.02)
    assert line["seeds_needed"] == 34 and line["min_effect_source"] == "observed mean"
    planned = robustness.power_line(g, 0.05, min_effect=0.04)  # 2 sd: few seeds
    assert planned["seeds_needed"] == robustness.seeds_needed(2.0, 0.05) < 8
    assert robustness.power_line(g | {"std": 0.0}, 0.05)["reason"].startswith("identical")


def test_schema_defaults_agree_with_the_report():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    report = schema["properties"]["report"]["properties"]
    assert report["split"]["default"] == HEADLINE_SPLIT
    assert report["min_effect"]["default"] is None


def _kl_cwd_records(rng):
    """The arms and seeds of config/kl_cwd.yaml (study.runs), with simulated numbers: kl +1 point, kl_cwd +2."""
    config = yaml.safe_load((ROOT / "config/kl_cwd.yaml").read_text())
    truth = {"kl": 0.01, "kl_cwd": 0.02}
    recs = []
    for run in study.runs(config):
        info = study.parse_run(run)
        base = 0.8 if info["arm"] == "teacher" else 0.7 + truth.get(info["method"], 0.0)
        splits = {sp: _split(base + rng.normal(0, 0.008)) for sp in config["evaluate"]["splits"]}
        recs.append({"run": run, **info, "config": "x.yml", "model": f"{run}.pdparams", "splits": splits})
    return config, recs


def test_kl_cwd_report_shows_pairs_robustness_power_and_forest(tmp_path):
    """The report path (stats.json -> summary.md, forest plot, overview.html) for kl_cwd.yaml's two arms."""
    from segdistill.report.overview import write_overview

    config, recs = _kl_cwd_records(np.random.default_rng(7))
    paths = _write(tmp_path, recs)
    st = stats.write_stats(paths, tmp_path / "stats.json", split=config["report"]["split"])
    assert st["family"]["members"] == 2 and len(st["pairs"]) == 1
    assert st["best_setting"]["chosen_on"] == "val" and st["best_run"]["chosen_on"] == "val"
    write_summary(paths, tmp_path / "stats.json", tmp_path / "summary.csv", tmp_path / "summary.md")
    md = (tmp_path / "summary.md").read_text()
    lines = md.splitlines()
    assert lines[:2] == ["- " + v["sentence"] for v in st["verdicts"]]
    assert "simultaneous 95% CI" in lines[0] and "for 2 arms" in lines[0]
    assert "## Method against method on test (paired by seed, Holm over 1 pair)" in md
    assert f"- {st['pairs'][0]['sentence']}" in md and st["pairs"][0]["sentence"].startswith("kl_cwd − kl: ")
    assert "| rank | method | mean mIoU | against the top arm |" in md
    assert "## Robustness of the gains" in md and "| BCa bootstrap |" in md
    assert "## Seeds and power" in md and "smallest gain found (80% power)" in md
    assert "Best setting, chosen on val" in md
    forest = tmp_path / "forest.png"
    rows = arm_figures.forest(tmp_path / "stats.json", forest)
    assert [r["method"] for r in rows] == ["kl", "kl_cwd"]
    g = {x["method"]: x for x in st["gains"] if x["metric"] == "miou"}
    assert rows[1]["ci_low"] == pytest.approx(100 * g["kl_cwd"]["adjusted"]["ci_low"])
    cost = tmp_path / "cost.csv"
    cost.write_text(
        "model,architecture,backbone,input,params,flops,cpu_ms,gpu_ms,compression,cpu_speedup\n"
        "teacher,DeepLabV3P,R50,64x64,26000000,3.5e9,200,nan,1,1\nstudent,DeepLabV3P,R18,64x64,12000000,1.7e9,100,nan,2.1,2\n"
    )
    write_overview(
        tmp_path / "summary.csv",
        tmp_path / "stats.json",
        cost,
        tmp_path / "o.rst",
        tmp_path / "o.html",
        figures=[("Gain per arm with its family-adjusted interval", forest)],
    )
    page = (tmp_path / "o.html").read_text()
    for needle in (
        "Method against method",
        "Ranking by mean",
        "Robustness",
        "Seeds and power",
        'alt="Gain per arm with its family-adjusted interval"',
        "chosen on val",
    ):
        assert needle in page, needle


def test_sweep_grid_figure_2d_and_its_errors(tmp_path):
    rng = np.random.default_rng(8)
    names = [f"kl_cwd~weight={w}~cwd_aspp.temperature={t}" for w in (1, 3) for t in (1, 4)]
    df = rows_from_records(sim_records(rng, dict(zip(names, (0.0, 0.01, 0.02, 0.03))) | {"kl_cwd": 0.0}, 4))
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats.stats_json(df)))
    grid = arm_figures.sweep_grid(path, tmp_path / "sweep.png")
    assert grid["axes"] == ["cwd_aspp.temperature", "weight"] and grid["x"] == [1.0, 4.0]
    assert np.isfinite(np.asarray(grid["mean"])).all()
    import matplotlib.image as mpimg

    assert mpimg.imread(str(tmp_path / "sweep.png"))[..., :3].std() > 0.05
    df1 = rows_from_records(sim_records(rng, {"kl~weight=1": 0.0, "kl~weight=2": 0.01}, 3))
    path.write_text(json.dumps(stats.stats_json(df1)))
    assert [x for x, _ in arm_figures.sweep_grid(path, tmp_path / "sweep1.png")["points"]] == [1.0, 2.0]
    df0 = rows_from_records(sim_records(rng, {"kl": 0.0, "cwd": 0.01}, 3))
    path.write_text(json.dumps(stats.stats_json(df0)))
    with pytest.raises(SegDistillError, match="needs the points of one method over 1 or 2 parameters"):
        arm_figures.sweep_grid(path, tmp_path / "none.png")


@pytest.mark.parametrize("d", [[0.01, 0.03, 0.02, 0.04, 0.0], [-0.02, 0.01], [0.005, -0.01, 0.0, 0.02, 0.013, -0.004]])
def test_diff_test_is_scipys_one_sample_t_test(d):
    from scipy import stats as st

    res = st.ttest_1samp(d, 0.0)
    for level in (0.95, 1 - 0.05 / 12):
        ours = family.diff_test(d, level)
        ci = res.confidence_interval(level)
        assert (ours["ci_low"], ours["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert ours["p_value"] == pytest.approx(res.pvalue)


def _write(tmp_path, recs):
    return write_records(tmp_path / "eval", recs)


def test_summary_md_is_rendered_from_stats_json(tmp_path):
    """summary.md prints what stats.json says (it computes nothing), and refuses statistics of another split."""
    _, recs = _kl_cwd_records(np.random.default_rng(9))
    paths = _write(tmp_path, recs)
    st = stats.write_stats(paths, tmp_path / "stats.json", min_effect=1.0)
    assert [p["min_effect"] for p in st["power"]] == [pytest.approx(0.01)] * 2
    assert {p["min_effect_source"] for p in st["power"]} == {"report.min_effect"}
    st["verdicts"][0]["sentence"] = "kl: a sentence only stats.json holds"
    st["pairs"][0]["sentence"] = "kl_cwd − kl: a pair only stats.json holds"
    (tmp_path / "stats.json").write_text(json.dumps(st))
    write_summary(paths, tmp_path / "stats.json", tmp_path / "summary.csv", tmp_path / "summary.md")
    md = (tmp_path / "summary.md").read_text()
    assert md.splitlines()[0] == "- kl: a sentence only stats.json holds"
    assert "- kl_cwd − kl: a pair only stats.json holds" in md
    with pytest.raises(SegDistillError, match="statistics on the 'test' split, the summary asks for 'val'"):
        write_summary(paths, tmp_path / "stats.json", tmp_path / "s2.csv", tmp_path / "s2.md", split="val")
    assert not (tmp_path / "s2.md").exists()


def test_a_sweep_study_schedules_the_sweep_figure(tmp_path):
    from conftest import run_snakemake, tiny_config
    from test_own_study import job_counts

    config = tiny_config(tmp_path, sweep={"method": "kl_cwd", "grid": {"weight": [1, 2]}})
    proc = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", config)
    counts = job_counts(proc.stdout + proc.stderr)
    out = proc.stdout + proc.stderr
    assert counts["figure"] == 6 and "results/report/figures/sweep.png" in out
    plain = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", tiny_config(tmp_path))
    assert job_counts(plain.stdout + plain.stderr)["figure"] == 5
    assert "results/report/figures/sweep.png" not in plain.stdout + plain.stderr
