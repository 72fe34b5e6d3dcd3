"""The whole workflow on the tiny study: report rows, columns and ranges; a second run has nothing to do."""

import os

from segdistill.paddle_env import paddle

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, job_counts, plan, run_snakemake, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_study(tiny_study):
    return tiny_study


def test_report_has_every_arm_and_seed(finished_study):
    workdir, _ = finished_study
    df = pd.read_csv(workdir / "results/report/summary.csv")
    val = df[df.split == "val"]
    assert set(val.arm) == {"teacher", "student", "distilled"}
    assert sorted(val[val.arm == "student"].seed) == [0, 1]
    assert set(val[val.arm == "distilled"].method) == {"kl", "kl_cwd"}
    assert len(val[val.arm == "distilled"]) == 4
    assert len(val[val.arm == "teacher"]) == 1  # per_seed: false -> one shared teacher
    assert set(df.split) == {"val", "test"}
    for col in ("miou", "acc", "kappa", "dice", "iou_background", "iou_optic_disc"):
        assert col in df.columns
    for col in ("miou", "acc", "dice", "iou_background"):
        assert df[col].between(0, 1).all(), col
    assert df.kappa.between(-1, 1).all()
    md = (workdir / "results/report/summary.md").read_text()
    assert "Gain of distilled over student on test" in md and "kl_cwd" in md


def test_every_job_logged_and_benchmarked(finished_study):
    workdir, _ = finished_study
    logs = list((workdir / "logs").rglob("*.log"))
    assert any("train/teacher" in str(p) for p in logs)
    assert any("distill/kl_cwd" in str(p) for p in logs)
    text = (workdir / "logs/distill/kl_cwd/seed0.log").read_text()
    assert "cwd_aspp" in text and "[eval]" in text
    assert "no teacher is built" in text  # teacher.outputs: cached (the default)
    for seed in (0, 1):  # one job per seed, though they share a teacher: a grown study computes the new ones only
        assert (workdir / f"benchmarks/teacher_outputs/seed{seed}.tsv").is_file()
    assert (workdir / "benchmarks/train/teacher/seed0.tsv").is_file()
    patched = yaml.safe_load((workdir / "results/configs/teacher_seed0.yml").read_text())
    assert patched["model"]["pretrained"].endswith("results/runs/teacher/seed0/best_model/model.pdparams")


def test_teacher_evaluates_on_its_own_interval(finished_study):
    workdir, _ = finished_study
    runs = workdir / "results/runs"
    assert list(pd.read_csv(runs / "teacher/seed0/eval_log.csv").iter) == [3, 6]  # teacher.save_interval
    assert list(pd.read_csv(runs / "student/seed0/eval_log.csv").iter) == [2, 4]  # train.save_interval
    assert list(pd.read_csv(runs / "distilled/kl/seed1/eval_log.csv").iter) == [2, 4]


def test_second_run_has_nothing_to_do(finished_study):
    workdir, config = finished_study
    proc = run_snakemake(workdir, "--cores", "2", "--configfile", config, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_forcerun_trains_again(finished_study, tmp_path):
    """`--forcerun distill` on a finished study retrains the run from iteration 0 (its log says why) instead of
    resuming the final checkpoint; the result equals the first run's."""
    import shutil

    reference, _ = finished_study
    work = tmp_path / "study"
    shutil.copytree(reference, work, symlinks=True)
    config = tiny_config(work)
    target = "results/runs/distilled/kl/seed0/best_model/model.pdparams"
    run_snakemake(work, "--cores", "1", "--configfile", config, "--forcerun", "distill", target)
    rerun = (work / "logs/distill/kl/seed0.log").read_text()  # Snakemake starts the job's log afresh
    assert "are of a run that finished (iteration 4 of 4)" in rerun and "training from iteration 0" in rerun, rerun
    assert "[train] iter 1/4" in rerun and "resumed from" not in rerun
    wa = paddle.load(str(reference / target))
    wb = paddle.load(str(work / target))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_plan_of_a_finished_study_is_the_whole_chain(finished_study):
    """The shipped studies' plan tests dry-run in the repository, where `make run` leaves a finished study: the
    plan must not depend on that (tests/test_own_study.py). Here, a finished study's plan is still all of it."""
    workdir, config = finished_study
    proc = plan(workdir, config)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == 3 and counts["teacher_outputs"] == 2 and counts["distill"] == 4, counts


def test_a_misspelled_layer_stops_the_study_before_the_teacher_trains(tmp_path):
    """`student: head.asp` is found by the check_terms job (both models, no weights), with the closest names."""
    import yaml as _yaml

    terms = _yaml.safe_load(TINY_TERMS)
    config = tiny_config(tmp_path, distill={"kl_cwd": {"terms": terms}})
    proc = run_snakemake(tmp_path, "--cores", "2", "--configfile", config, check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs/check_terms.log").read_text()
    assert "student model (DeepLabV3P) has no layer named 'head.asp'; closest: head.aspp" in log, log[-2000:]
    assert not (tmp_path / "results/runs").exists() and not (tmp_path / "logs/train").exists()


TINY_TERMS = """
- {name: kl_logits, student: logits, teacher: logits, loss: kl, weight: 3}
- {name: cwd_aspp, student: head.asp, teacher: head.aspp, loss: cwd, weight: 3, temperature: 4}
"""


def test_dry_run_with_gpu_pool_shows_whole_chain(tmp_path):
    config = tiny_config(tmp_path)
    proc = run_snakemake(tmp_path, "-n", "--cores", "all", "--resources", "gpu=4", "--configfile", config)
    out = proc.stdout + proc.stderr
    for rule in (
        "make_synthetic",
        "validate_data",
        "train",
        "patch_teacher",
        "teacher_outputs",
        "distill",
        "summary",
    ):
        assert rule in out, rule
    # Trained runs are evaluated in their training jobs; only a teacher the user brings has an evaluate job.
    assert "rule evaluate:" not in out


def test_provenance_says_cached_or_online(finished_study):
    import json

    from segdistill.data.fetch import sha256_of as sha256_file

    workdir, _ = finished_study
    prov = json.loads((workdir / "results/report/provenance.json").read_text())["teacher_outputs"]
    assert sorted(prov) == [f"distilled/{m}/seed{s}" for m in ("kl", "kl_cwd") for s in (0, 1)]
    for run, rec in prov.items():
        seed = run.rsplit("seed", 1)[1]
        assert rec["mode"] == "cached" and rec["dtype"] == "float16"
        assert rec["manifest_sha256"] == sha256_file(workdir / f"results/teacher_outputs/seed{seed}/manifest.json")


def test_provenance_names_the_threads_of_every_job(finished_study):
    """The study's default `threads`: every training job and the teacher-outputs job computed with one thread,
    and a one-thread cache's manifest does not name the count (caches and run keys of earlier studies stand)."""
    import json

    workdir, _ = finished_study
    prov = json.loads((workdir / "results/report/provenance.json").read_text())["threads"]
    runs = ["teacher/seed0"] + [f"student/seed{s}" for s in (0, 1)]
    runs += [f"distilled/{m}/seed{s}" for m in ("kl", "kl_cwd") for s in (0, 1)]
    assert prov["runs"] == {run: 1 for run in runs}
    assert prov["teacher_outputs"] == {f"results/teacher_outputs/seed{s}": 1 for s in (0, 1)}
    manifest = json.loads((workdir / "results/teacher_outputs/seed0/manifest.json").read_text())
    assert "threads" not in manifest


def test_float32_cache_gives_the_online_summary(tmp_path):
    """The tiny study with `teacher.outputs: online` and with a float32 cache: the same summary.csv, byte for byte."""
    out = {}
    for mode in ("online", "cached"):
        workdir = tmp_path / mode
        workdir.mkdir()
        teacher = {"config": str(ROOT / "tests/configs/teacher_tiny.yml"), "per_seed": False, "outputs": mode}
        config = tiny_config(workdir, teacher=teacher, cache={"dtype": "float32"})
        run_snakemake(workdir, "--cores", "2", "--configfile", config)
        out[mode] = (workdir / "results/report/summary.csv").read_bytes()
    assert out["online"] == out["cached"]
    assert not (tmp_path / "online/results/teacher_outputs").exists()


def _training_pids(root_pid, save_dir_part):
    """The training processes under `root_pid` (only this test's: other runs on the machine may use the same
    relative save_dir)."""
    import psutil

    pids = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "segdistill.cli train" in cmd and save_dir_part in cmd:
            pids.append(p.pid)
    return pids


def _kill_at_iteration(proc, log, save_dir_part, iteration, timeout=300):
    """Wait until `log` shows training iteration >= `iteration`, then SIGKILL the training process."""
    import re
    import signal
    import time

    deadline = time.time() + timeout
    pattern = re.compile(r"\[train\] iter (\d+)/")
    while time.time() < deadline and proc.poll() is None:
        done = [int(m) for m in pattern.findall(log.read_text())] if log.exists() else []
        if done and max(done) >= iteration:
            for pid in _training_pids(proc.pid, save_dir_part):
                os.kill(pid, signal.SIGKILL)
            return max(done)
        time.sleep(0.05)
    raise AssertionError(f"{log} never reached iteration {iteration}")


def test_kill_9_at_random_iterations_then_rerun_gives_same_metrics(finished_study, tmp_path):
    """Five SIGKILLs across teacher, student and distilled trainings; reruns must end with identical metrics."""
    import random
    import subprocess

    from conftest import BIN

    reference, _ = finished_study
    config = tiny_config(tmp_path)
    rng = random.Random()
    seed_used = rng.randrange(10**6)
    rng.seed(seed_used)
    # (run, log, iterations, earliest kill). The teacher (6 iterations, a checkpoint at 3) is killed at 4 or 5, after
    # its first checkpoint, so the resume path is exercised on every run of this test; the others anywhere.
    targets = [
        ("teacher/seed0", "logs/train/teacher/seed0.log", 6, 4),
        ("student/seed1", "logs/train/student/seed1.log", 4, 1),
        ("distilled/kl/seed0", "logs/distill/kl/seed0.log", 4, 1),
        ("distilled/kl_cwd/seed1", "logs/distill/kl_cwd/seed1.log", 4, 1),
        ("distilled/kl_cwd/seed0", "logs/distill/kl_cwd/seed0.log", 4, 1),
    ]
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(ROOT / "workflow/Snakefile"),
        "--directory",
        str(tmp_path),
        "--workflow-profile",
        "none",
        "--cores",
        "1",
        "--configfile",
        str(config),
        "--rerun-incomplete",
    ]
    env = dict(os.environ, SEGDISTILL_GPU_IDS="")
    killed_at = []
    for run, log, iters, earliest in targets:
        it = rng.randint(earliest, iters - 1)
        proc = subprocess.Popen(
            cmd + [f"results/runs/{run}/best_model/model.pdparams"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed_at.append((run, _kill_at_iteration(proc, tmp_path / log, f"results/runs/{run}", it)))
        proc.wait(timeout=300)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", config, "--rerun-incomplete")
    what = f"after kills {killed_at} (rng seed {seed_used})"
    ref = pd.read_csv(reference / "results/report/summary.csv")
    got = pd.read_csv(tmp_path / "results/report/summary.csv")
    pd.testing.assert_frame_equal(ref, got, obj=f"summary {what}")
    # Metrics of briefly trained tiny models move little; losses and weights show any divergence.
    for run, _, _, _ in targets:
        a, b = reference / f"results/runs/{run}", tmp_path / f"results/runs/{run}"
        pd.testing.assert_frame_equal(
            pd.read_csv(a / "train_log.csv"), pd.read_csv(b / "train_log.csv"), obj=f"{run} train_log {what}"
        )
        wa, wb = paddle.load(str(a / "best_model/model.pdparams")), paddle.load(str(b / "best_model/model.pdparams"))
        assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa), f"{run} weights differ {what}"
    resumed = [
        r for r, _ in killed_at if "resumed from" in (tmp_path / dict((t[0], t[1]) for t in targets)[r]).read_text()
    ]
    assert resumed, f"no killed run resumed from a checkpoint: {killed_at}"
