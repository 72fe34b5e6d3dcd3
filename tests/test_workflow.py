"""The whole workflow on the tiny study: report rows, columns and ranges; a second run has nothing to do."""

import shutil

import pandas as pd
import pytest
import yaml

from conftest import ROOT, TINY_STUDY, run_snakemake

pytestmark = pytest.mark.slow


def tiny_config(workdir, **overrides):
    """The tiny study with its config paths made absolute, written into `workdir`."""
    cfg = yaml.safe_load(TINY_STUDY.read_text())
    for role in ("teacher", "student"):
        cfg[role]["config"] = str(ROOT / cfg[role]["config"])
    cfg.update(overrides)
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    config = tiny_config(workdir)
    proc = run_snakemake(workdir, "--cores", "2", "--configfile", config)
    return workdir, config, proc


def test_report_has_every_arm_and_seed(finished_study):
    workdir, _, _ = finished_study
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
    assert "Gain of distilled over student" in md and "kl_cwd" in md


def test_every_job_logged_and_benchmarked(finished_study):
    workdir, _, _ = finished_study
    logs = list((workdir / "logs").rglob("*.log"))
    assert any("train/teacher" in str(p) for p in logs)
    assert any("distill/kl_cwd" in str(p) for p in logs)
    text = (workdir / "logs/distill/kl_cwd/seed0.log").read_text()
    assert "cwd_aspp" in text and "[eval]" in text
    assert (workdir / "benchmarks/train/teacher/seed0.tsv").is_file()
    patched = yaml.safe_load((workdir / "results/configs/teacher_seed0.yml").read_text())
    assert patched["model"]["pretrained"].endswith("results/runs/teacher/seed0/best_model/model.pdparams")


def test_second_run_has_nothing_to_do(finished_study):
    workdir, config, _ = finished_study
    proc = run_snakemake(workdir, "--cores", "2", "--configfile", config, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_dry_run_with_gpu_pool_shows_whole_chain(tmp_path):
    config = tiny_config(tmp_path)
    proc = run_snakemake(tmp_path, "-n", "--cores", "all", "--resources", "gpu=4", "--configfile", config)
    out = proc.stdout + proc.stderr
    for rule in ("make_synthetic", "validate_data", "train", "patch_teacher", "distill", "evaluate", "summary"):
        assert rule in out, rule
