"""Loader workers change nothing: the tiny study with train.num_workers 2 equals the one with 0, byte for byte."""

import json

from segdistill.paddle_env import paddle

import numpy as np
import yaml

from conftest import TINY_STUDY, run_snakemake, tiny_config


def test_num_workers_2_gives_byte_identical_summary(tiny_study, tmp_path):
    reference, _ = tiny_study  # train.num_workers: 0 (the schema's default)
    train = dict(yaml.safe_load(TINY_STUDY.read_text())["train"], num_workers=2)
    config = tiny_config(tmp_path, train=train)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", config)
    # The job's spec (what the trainer read) has the 2 workers; the reference's has 0.
    spec = "results/runs/distilled/kl_cwd/seed1/launch_logs/spec.json"
    assert json.loads((tmp_path / spec).read_text())["spec"]["num_workers"] == 2
    assert json.loads((reference / spec).read_text())["spec"]["num_workers"] == 0
    summary = "results/report/summary.csv"
    assert (tmp_path / summary).read_bytes() == (reference / summary).read_bytes()
    for run in ("teacher/seed0", "student/seed1", "distilled/kl_cwd/seed0"):
        a = paddle.load(str(reference / f"results/runs/{run}/best_model/model.pdparams"))
        b = paddle.load(str(tmp_path / f"results/runs/{run}/best_model/model.pdparams"))
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), run
        log = f"results/runs/{run}/train_log.csv"
        assert (tmp_path / log).read_bytes() == (reference / log).read_bytes(), run
