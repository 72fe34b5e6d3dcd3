"""Multi-output PaddleSeg models as students: one YAML per `loss:` convention (written here in PaddleSeg's
conventions) trains and distils; auxiliary outputs (`logits.1`, ...) are addressable, online and cached; a term
naming an output the teacher lacks is one error before training; `segdistill layers` lists the outputs."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, cache_spec, run_snakemake, tiny_config, tiny_spec
from segdistill.distill import cache
from segdistill.distill.terms import terms_from_paddleseg
from segdistill.errors import SegDistillError
from segdistill.export import predictor, run_predictor
from segdistill.specs import TeacherOutputsSpec
from segdistill.trainer import Trainer, TrainSpec

CONFIGS = ROOT / "tests" / "configs"
# loss convention -> (YAML, the loss parts its training log has)
CONVENTIONS = {
    "one type over three outputs": ("pp_liteseg_tiny.yml", ["ce", "ce_1", "ce_2"]),
    "one type per output, a detail head": ("stdc_tiny.yml", ["ohem", "ohem_1", "ohem_2", "detail_3"]),
    "MixedLoss and Dice": ("mixed_tiny.yml", ["ce", "lovasz", "dice_1", "dice_2"]),
}
AUX_TERMS = [{"student": "logits.1", "teacher": "logits", "loss": "kl", "weight": 1}, {"loss": "kl", "weight": 3}]


def spec(config, save_dir, data, **kw):
    return tiny_spec(data, save_dir, CONFIGS / config, iters=2, save_interval=2, log_iters=1, **kw)


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_each_loss_convention_trains_alone_and_distils(convention, tiny_data, patched_teacher, tmp_path):
    config, parts = CONVENTIONS[convention]
    Trainer(spec(config, tmp_path / "alone", tiny_data), log=lambda m: None).run()
    Trainer(spec(config, tmp_path / "kd", tiny_data, teacher_config=patched_teacher), log=lambda m: None).run()
    alone = pd.read_csv(tmp_path / "alone/train_log.csv")
    kd = pd.read_csv(tmp_path / "kd/train_log.csv")
    assert list(alone.columns) == ["iter", "loss", *parts, "lr"]
    assert list(kd.columns) == ["iter", "loss", *parts, "kl:logits", "lr"]  # the YAML's distill_loss
    for log in (alone, kd):
        assert np.isfinite(log.drop(columns="iter").to_numpy()).all()
        np.testing.assert_allclose(log["loss"], log.drop(columns=["iter", "loss", "lr"]).sum(axis=1), rtol=1e-5)
    # Same seed and data: iteration 1's task losses agree, and the teacher adds its term on top.
    np.testing.assert_allclose(kd.loc[0, parts], alone.loc[0, parts], rtol=1e-5)
    assert (tmp_path / "kd/best_model/model.pdparams").is_file()


def test_auxiliary_output_distils_online_and_cached_alike(tiny_data, patched_teacher, tmp_path):
    """A term from the student's auxiliary head (`logits.1`, train mode) to the teacher's logits: the float32
    cache holds what the terms take from the teacher and trains exactly as the online teacher."""
    terms_path = tmp_path / "terms.yml"
    terms_path.write_text(yaml.safe_dump({"terms": AUX_TERMS}))
    folder = tmp_path / "cache"
    manifest = cache.write_teacher_outputs(
        TeacherOutputsSpec(
            config=str(CONFIGS / "pp_liteseg_tiny.yml"),
            teacher_config=patched_teacher,
            distill=[str(terms_path)],
            out=str(folder),
            data_seed=0,
            data_root=str(tiny_data),
            iters=2,
            dtype="float32",
        ),
        log=lambda m: None,
    )
    assert list(manifest["tensors"]) == ["logits"]
    runs = {}
    for name, kw in (("online", {}), ("cached", {"teacher_outputs": str(folder)})):
        Trainer(
            spec(
                "pp_liteseg_tiny.yml",
                tmp_path / name,
                tiny_data,
                teacher_config=patched_teacher,
                distill_terms=AUX_TERMS,
                **kw,
            ),
            log=lambda m: None,
        ).run()
        runs[name] = pd.read_csv(tmp_path / name / "train_log.csv")
    assert "kl:logits.1->logits" in runs["online"].columns
    assert runs["online"]["kl:logits.1->logits"].gt(0).all()
    pd.testing.assert_frame_equal(runs["online"], runs["cached"])


def test_an_output_the_teacher_lacks_is_one_error_before_training(tiny_data, patched_teacher, tmp_path):
    bad = [{"student": "logits.1", "teacher": "logits.1", "loss": "kl"}]
    with pytest.raises(
        SegDistillError,
        match=r"teacher model has no output 'logits.1': in eval mode it returns "
        r"1 output\(s\) \(logits\)",
    ):
        Trainer(
            spec("pp_liteseg_tiny.yml", tmp_path / "run", tiny_data, teacher_config=patched_teacher, distill_terms=bad),
            log=lambda m: None,
        )
    assert not (tmp_path / "run").exists()
    terms_path = tmp_path / "terms.yml"
    terms_path.write_text(yaml.safe_dump({"terms": bad}))
    with pytest.raises(SegDistillError, match="teacher model has no output 'logits.1'"):
        cache.write_teacher_outputs(
            cache_spec(
                tiny_data, patched_teacher, terms_path, tmp_path / "cache", CONFIGS / "pp_liteseg_tiny.yml", iters=2
            ),
            log=lambda m: None,
        )
    assert not (tmp_path / "cache").exists()
    with pytest.raises(SegDistillError, match=r"student model has no output 'logits.3': in train mode it returns 3"):
        Trainer(
            spec(
                "pp_liteseg_tiny.yml",
                tmp_path / "run",
                tiny_data,
                teacher_config=patched_teacher,
                distill_terms=[{"student": "logits.3", "teacher": "logits", "loss": "kl"}],
            ),
            log=lambda m: None,
        )


def test_more_outputs_than_loss_entries_is_named(tiny_data, tmp_path):
    cfg = tmp_path / "one_coef.yml"
    cfg.write_text((CONFIGS / "pp_liteseg_tiny.yml").read_text().replace("coef: [1, 1, 1]", "coef: [1]"))
    trainer = Trainer(
        TrainSpec(config=str(cfg), save_dir=str(tmp_path / "run"), data_root=str(tiny_data), iters=1, save_interval=1),
        log=lambda m: None,
    )
    with pytest.raises(
        SegDistillError,
        match=r"one_coef.yml: the model returns 3 output\(s\) in training but "
        r"loss has 1 entry",
    ):
        trainer.run()


def test_distill_loss_block_pairs_output_i_with_output_i():
    terms = terms_from_paddleseg({"types": [{"type": "KLLoss", "temperature": 2}], "coef": [3, 1]}, "s.yml")
    assert [(t.student, t.teacher, t.weight, t.temperature) for t in terms] == [
        ("logits", "logits", 3.0, 2.0),
        ("logits.1", "logits.1", 1.0, 2.0),
    ]
    with pytest.raises(SegDistillError, match=r"s.yml.types\[0\]: KLLoss option\(s\) \['alpha'\] are not supported"):
        terms_from_paddleseg({"types": [{"type": "KLLoss", "alpha": 1}], "coef": [1]}, "s.yml")


def test_layers_lists_the_outputs_of_both_modes():
    out = subprocess.run(
        [str(BIN / "segdistill"), "layers", str(CONFIGS / "stdc_tiny.yml"), "--depth", "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "output (eval and train)" in rows["logits"] and "[1, 2, 32, 32]" in rows["logits"]
    assert "output (train only)" in rows["logits.3"] and "[1, 1, 4, 4]" in rows["logits.3"]  # the detail head
    assert "logits.4" not in rows


def test_multi_output_student_through_the_workflow_to_cost_and_export(patched_teacher, tmp_path):
    """STDC1-Seg (four outputs in training, the last its detail head) as `student.config`, inherited through
    `_base_` as a zoo YAML would be, with a provided teacher and KL on logits: trained, distilled from the teacher
    output cache, costed, exported (the main head only) and summarised."""
    overlay = tmp_path / "configs/stdc_overlay.yml"
    overlay.parent.mkdir()
    overlay.write_text(yaml.safe_dump({"_base_": str(CONFIGS / "stdc_tiny.yml"), "iters": 2}))
    config = tiny_config(
        tmp_path,
        teacher={
            "config": str(CONFIGS / "teacher_tiny.yml"),
            "weights": str(Path(patched_teacher).parent / "run/best_model/model.pdparams"),
        },
        student={"config": str(overlay)},
        distill={"kl": {"terms": [{"student": "logits", "teacher": "logits", "loss": "kl", "weight": 3}]}},
        seeds=[0],
        train={"save_interval": 2, "log_iters": 1, "keep_checkpoint_max": 1},
        report={"latency_runs": 1},
    )
    targets = ["results/report/summary.md", "results/report/cost.csv", "results/export/export.json"]
    run_snakemake(tmp_path, *targets, "--cores", "1", "--configfile", config)  # the figures add nothing here
    res = tmp_path / "results"
    study = yaml.safe_load((res / "configs/study/student.yml").read_text())
    assert "_base_" not in study and study["model"]["type"] == "STDCSeg" and study["iters"] == 2
    log = pd.read_csv(res / "runs/distilled/kl/seed0/train_log.csv")
    assert list(log.columns) == ["iter", "loss", "ohem", "ohem_1", "ohem_2", "detail_3", "kl:logits", "lr"]
    assert json.loads((res / "teacher_outputs/seed0/manifest.json").read_text())["tensors"].keys() == {"logits"}
    cost = pd.read_csv(res / "report/cost.csv").set_index("model")
    assert cost.loc["student", "backbone"] == "STDC1" and cost.loc["student", "input"] == "32x32"
    assert cost.loc["student", "params"] > 0 and cost.loc["student", "flops"] > 0
    export = json.loads((res / "export/export.json").read_text())
    assert export["run"] == "distilled/kl/seed0" and export["max_abs_diff"] <= export["tolerance"]
    batch = np.zeros((2, 3, 32, 32), dtype="float32")
    assert run_predictor(predictor(res / "export/best_student", onednn=False), batch).shape == (2, 2, 32, 32)
    assert "distilled (kl)" in (res / "report/summary.md").read_text()
