"""The distillation benchmark runs end to end at test size and reports every configuration."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, STUDENT, TEACHER

SCRIPT = ROOT / "bench" / "distill_step.py"
CONFIGS = [
    "bare_student",
    "trainer_student",
    "teacher_forward",
    "distill_kl",
    "distill_kl_cwd",
    "paddleslim_kl",
    "paddleslim_kl_frozen",
]


def run_bench(tmp_path, script, flags, timeout=600):
    """`script` with `flags`, run in `tmp_path` as a person runs it; its finished process."""
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, flags)], cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_bench_reports_every_configuration(tmp_path):
    out = tmp_path / "bench.json"
    flags = "--size 32 --batch 2 --steps 2 --warmup 1 --rounds 1 --jobs 2 --breakdown 1 --paired 1".split()
    flags += ["--teacher-config", TEACHER, "--student-config", STUDENT, "--out", out]
    proc = run_bench(tmp_path, SCRIPT, flags, timeout=300)
    report = json.loads(out.read_text())

    assert list(report["configurations"]) == CONFIGS
    for name, conf in report["configurations"].items():
        assert len(conf["step_times_s"]) == 2, name
        for key in ("median_step_s", "min_step_s", "first_step_s", "peak_rss_mb", "vmhwm_mb"):
            value = conf[key]
            assert math.isfinite(value) and value > 0, (name, key, value)
        assert conf["breakdown_s"]["total"] > 0, name
        # Every configuration builds at least one model on top of the bare runtime.
        assert conf["peak_rss_mb"] > report["reference"]["runtime_peak_rss_mb"], name

    # Training holds more than an inference-only forward of the same-sized model.
    confs = report["configurations"]
    assert confs["trainer_student"]["peak_rss_mb"] > confs["teacher_forward"]["peak_rss_mb"]
    ratios = report["ratios"]
    for key in (
        "trainer_step_vs_bare_loop",
        "distill_kl_step_vs_student_plus_teacher",
        "distill_kl_rss_vs_student_plus_teacher",
        "distill_kl_cwd_rss_vs_paddleslim_kl",
    ):
        assert ratios[key]["ratio"] > 0 and isinstance(ratios[key]["met"], bool), key
    assert not report["settings"]["timings_valid"]  # two children ran at once
    paired = report["paired"]
    assert set(paired["median_step_s"]) == {
        "bare_student",
        "trainer_student",
        "teacher_forward",
        "distill_kl",
        "distill_kl_cwd",
    }
    assert all(v > 0 for v in paired["median_step_s"].values())
    assert all(r["ratio"] > 0 for r in paired["ratios"].values())
    # The table goes to stdout and names every configuration.
    for conf in confs.values():
        assert conf["description"] in proc.stdout


def test_teacher_cache_bench_reports_ratios(tmp_path):
    out = tmp_path / "cache.json"
    flags = "--size 32 --batch 2 --iters 2 --warmup 0 --paired 2 --rss_steps 1".split()
    run_bench(
        tmp_path,
        ROOT / "bench/teacher_cache.py",
        flags + ["--teacher_config", TEACHER, "--student_config", STUDENT, "--out", out],
    )
    report = json.loads(out.read_text())
    assert set(report["paired_median_step_s"]) == {"student", "cached_kl", "online_kl"}
    assert all(v > 0 for v in report["paired_median_step_s"].values())
    assert report["cached_kl_vs_student"] > 0 and isinstance(report["met"]["step"], bool)
    assert all(v > 0 for v in report["peak_rss_mb"].values())
    # 2 iterations x 2 images of 2 x 8 x 8 float16 logits (stored before the final upsampling)
    assert report["cache_bytes"] == 2 * 2 * 2 * 8 * 8 * 2
    sizes = report["bytes_per_image"]
    assert sizes["cpu 64x64"]["bytes_per_image"]["float16"]["kl"] == 2 * 16 * 16 * 2
    assert sizes["optic disc 512x512"]["pre_upsample"] is True


def test_methods_bench_reports_every_arm_against_the_student(tmp_path):
    """bench/methods_step.py at test size on a two-arm copy of config/methods.yaml (its terms, tiny models)."""
    import yaml

    study = yaml.safe_load((ROOT / "config/methods.yaml").read_text())
    study["teacher"]["config"], study["student"]["config"] = TEACHER, STUDENT
    study["distill"] = {k: study["distill"][k] for k in ("ifvd", "mgd")}
    path = tmp_path / "methods.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    out = tmp_path / "bench.json"
    flags = "--size 32 --batch 2 --steps 1 --warmup 1 --paired 2 --loss-sides 32".split()
    proc = run_bench(tmp_path, ROOT / "bench/methods_step.py", ["--study", path, *flags, "--out", out])
    report = json.loads(out.read_text())
    confs = report["configurations"]
    assert list(confs) == ["student", "ifvd", "mgd"]
    assert confs["student"]["step_vs_student"] == 1.0 and confs["student"]["rss_vs_student"] == 1.0
    for name, conf in confs.items():
        assert all(math.isfinite(conf[k]) and conf[k] > 0 for k in conf), name
        assert len(report["paired_step_times_s"][name]) == 2
    assert "| mgd | mgd on head.aspp |" in proc.stdout
    assert set(report["losses_alone"]) == {"ifvd:32", "mgd:32"}
    assert all(v["median_s"] > 0 for v in report["losses_alone"].values())


def test_cache_verify_bench_reports_size_and_times(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "bench/cache_verify.py"),
        "--size",
        "32",
        "--batch",
        "2",
        "--iters",
        "3",
        "--rounds",
        "2",
        "--dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["shape"] == [3, 2, 2, 8, 8] and out["file_bytes"] > 3 * 2 * 2 * 8 * 8 * 2 and len(out["verify_s"]) == 2
    assert not any(tmp_path.iterdir())  # the scratch file is removed


def _bench_module(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_study_time_splits_each_rule_of_a_finished_study(tiny_study):
    """bench/study_time.py on a finished study: every training and teacher-outputs rule has its wall time split
    into the compute its jobs logged and the rest; the study's start-up share is the rest over the wall."""
    workdir, _ = tiny_study
    result = _bench_module("study_time").main([str(workdir)])
    rules = {r["rule"]: r for r in result["rules"]}
    for rule in ("train/teacher", "train/student", "distill/kl", "distill/kl_cwd", "teacher_outputs"):
        assert rules[rule]["compute"] > 0 and 0 < rules[rule]["compute"] < rules[rule]["wall"], rules[rule]
    # teacher_outputs: the two seeds' caches and the distinct-input table they gather from
    assert rules["train/student"]["jobs"] == 2 and rules["teacher_outputs"]["jobs"] == 3
    total = result["total"]
    assert total["share"] == pytest.approx(total["rest"] / total["wall"]) and 0 < total["share"] < 1


def test_verdict_odds_counts_the_draws_whose_t_interval_is_above_zero():
    """bench/verdict_odds.py's share against scipy's one-sample t interval on the same draws."""
    from scipy import stats

    odds = _bench_module("verdict_odds")
    pool = np.array([9.1, -2.0, 7.5, 11.8, -0.1, 10.2, -2.5, 12.0, 4.2])
    n, draws = 8, 400
    sample = np.random.default_rng(0).choice(pool, size=(draws, n), replace=True)
    expected = np.mean([stats.ttest_1samp(s, 0).confidence_interval(0.95).low > 0 for s in sample])
    assert odds.gain_share(pool, n, draws, seed=0) == pytest.approx(expected)
    assert 0 < expected < 1
    assert odds.gain_share(np.array([1.0, 2.0]), 5, 200) == 1.0
    assert odds.gain_share(np.array([-1.0, 1.0]), 12, 2000) < 0.1


def test_verdict_odds_pools_gains_given_in_a_json_file(tmp_path):
    """A .json file stands for studies already measured: its roundings are pooled as studies' gains are, and keys
    starting with "_" describe the file; the shipped file of the default's roundings reads."""
    odds = _bench_module("verdict_odds")
    given = tmp_path / "roundings.json"
    given.write_text(json.dumps({"_about": "test", "a": [1.0, 2.0], "b": [-1.0, 3.0, 4.0]}))
    result = odds.main([str(given), "--seeds", "4", "--draws", "300"])
    assert result["per_study"] == {"roundings.json:a": [1.0, 2.0], "roundings.json:b": [-1.0, 3.0, 4.0]}
    pool = np.array([1.0, 2.0, -1.0, 3.0, 4.0])
    assert result["shares"][4] == odds.gain_share(pool, 4, 300)
    shipped = odds.main([str(ROOT / "bench/data/default_roundings.json"), "--seeds", "10", "--draws", "300"])
    assert len(shipped["per_study"]) >= 4 and all(len(g) == 10 for g in shipped["per_study"].values())


def test_schedule_follows_priorities_threads_and_dependencies():
    """bench/schedule.py on a hand-made graph: the teacher (priority 10) starts first, a count above the cores is
    lowered to them, compute divides by Amdahl's speed-up (s(2) = 2: all of it parallel), start-up does not."""
    schedule = _bench_module("schedule")
    Job = schedule.Job

    def job(rule, jobid, deps=(), priority=0, wildcards=""):
        return Job(rule, jobid, [], [f"out{jobid}"], priority, f"benchmarks/{rule}/{jobid}.tsv", wildcards, set(deps))

    jobs = [
        job("train", 1, wildcards="arm=student, seed=0"),
        job("train", 2, wildcards="arm=student, seed=1"),
        job("train", 3, priority=10, wildcards="arm=teacher, seed=0"),
        job("teacher_outputs", 4, deps={3}),
        job("distill", 5, deps={4}),
        job("distill", 6, deps={4}),
    ]
    times = {"train/1": (10, 10), "train/2": (10, 10), "train/3": (104, 100), "teacher_outputs/4": (50, 50)}
    times |= {"distill/5": (10, 10), "distill/6": (10, 10)}
    one = dict.fromkeys(schedule.KINDS, 1)
    # Today: teacher 0-104 beside the students, outputs 104-154, the distilled runs side by side 154-164.
    assert schedule.simulate(jobs, times, 2, one, {}, 0)["wall"] == pytest.approx(164)
    # Teacher on both cores: 4 + 100 / 2 = 54 s; then the students (earlier in the order) before the outputs.
    fast = schedule.simulate(jobs, times, 2, dict(one, teacher=8), {"teacher": 2.0}, 0)
    assert fast["spans"]["train/3 (3)"] == pytest.approx((0, 54))
    assert fast["spans"]["teacher_outputs/4 (4)"] == pytest.approx((64, 114)) and fast["wall"] == pytest.approx(124)
    assert schedule.amdahl(1.2, 2) == pytest.approx(1.2) and schedule.amdahl(1.2, 16) < 1.5 < schedule.amdahl(2, 4)


def test_schedule_reads_the_job_graph_and_times_of_a_finished_study(tiny_study):
    """bench/schedule.py on the tiny study: Snakemake's dry run gives every job and its dependencies (a distilled
    run waits for the teacher through its outputs), the benchmarks give their times; on one core the projection
    is the sum of the jobs, on many the longest chain."""
    schedule = _bench_module("schedule")
    workdir, config = tiny_study
    jobs = schedule.parse_jobs(schedule.dry_run(str(config), workdir))
    times = schedule.study_seconds(workdir)
    by_id = {j.jobid: j for j in jobs}

    def ancestors(j):
        return set(by_id[j].deps).union(*(ancestors(d) for d in by_id[j].deps))

    teacher = next(j.jobid for j in jobs if j.kind == "teacher")
    assert all(teacher in ancestors(j.jobid) for j in jobs if j.rule in ("distill", "teacher_outputs"))
    assert {j.name for j in jobs if j.benchmark} <= set(times)
    length = {j.jobid: schedule.job_seconds(j, times, 2.0)[0] for j in jobs}

    def finish(j):
        return length[j] + max((finish(d) for d in by_id[j].deps), default=0.0)

    one = dict.fromkeys(schedule.KINDS, 1)
    assert schedule.simulate(jobs, times, 1, one, {}, 2.0)["wall"] == pytest.approx(sum(length.values()))
    assert schedule.simulate(jobs, times, 64, one, {}, 2.0)["wall"] == pytest.approx(max(map(finish, length)))


def test_protocol_bench_times_every_protocol(tmp_path):
    out = tmp_path / "protocol.json"
    cmd = [sys.executable, str(ROOT / "bench" / "protocol_cost.py"), "--images", "1", "--rounds", "1", "--warmup", "0"]
    subprocess.run([*cmd, "--out", str(out)], check=True, cwd=ROOT, capture_output=True, timeout=900)
    rec = json.loads(out.read_text())
    assert set(rec["summary"]) == {"plain", "slide", "scale_0.5", "scales_flip", "flips_slide", "windows"}
    assert rec["summary"]["plain"]["cpu"]["x_plain"] == 1.0
    assert all(v > 0 for v in rec["slide_over_windows"].values())


def test_paddleseg_validation_bench_runs_at_test_size_and_cleans_up(tmp_path):
    """bench/paddleseg_validate.py end to end on 12 small pairs: splits as asked, its temporary set deleted."""
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("paddleseg_validate.*"))
    out = tmp_path / "v.json"
    cmd = [sys.executable, str(ROOT / "bench/paddleseg_validate.py"), "--images", "12", "--val", "3"]
    cmd += ["--selection", "2", "--width", "64", "--height", "32", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["splits"] == {"train": 7, "val": 2, "test": 3} and len(report["digest"]) == 64
    assert report["validate_and_split_cpu_s"] > 0
    assert set(Path(tempfile.gettempdir()).glob("paddleseg_validate.*")) == before
