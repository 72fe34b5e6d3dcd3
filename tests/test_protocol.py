"""PaddleSeg's test_config protocol: segdistill's evaluation against PaddleSeg 2.8's own inference functions
(`paddleseg.core.infer.inference` / `aug_inference`, used as core/val.py uses them) on trained weights."""

import json
from pathlib import Path

from segdistill.paddle_env import paddle

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from segdistill.errors import SegDistillError
from segdistill.metrics import ConfusionMatrix
from segdistill.protocol import Protocol, auc_roc, batch_logits, windows

STUDENT = ROOT / "tests/configs/student_tiny.yml"
# The images (32x32) are resized to 48 wide x 40 high for the model, so every protocol undoes a resize; the
# windows (24x24 every 16 x 12) overlap by different counts.
SLIDE = {"is_slide": True, "crop_size": [24, 24], "stride": [16, 12]}
PROTOCOLS = {
    "sliding window": SLIDE,
    "multi-scale + horizontal flip": {"aug_eval": True, "scales": [0.75, 1.0, 1.25], "flip_horizontal": True},
    "single scale 0.5": {"aug_eval": True, "scales": 0.5},
    "both flips + slide": {"aug_eval": True, "flip_horizontal": True, "flip_vertical": True, **SLIDE},
    "none": {},
}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """The tiny student trained 4 iterations on 48x40 inputs: (model, its val split)."""
    from segdistill.evaluate import build_split
    from segdistill.models import load_trained
    from segdistill.paddleseg_yaml import build
    from segdistill.trainer import Trainer, TrainSpec

    out = tmp_path_factory.mktemp("protocol")
    cfg = yaml.safe_load(STUDENT.read_text())
    for ds in ("train_dataset", "val_dataset"):
        cfg[ds]["transforms"][0]["target_size"] = [48, 40]
    config = out / "student.yml"
    config.write_text(yaml.safe_dump(cfg))
    spec = TrainSpec(config=str(config), save_dir=str(out / "run"), data_root=str(tiny_data), iters=4, do_eval=False)
    Trainer(spec, log=lambda m: None).run()
    model, dic = load_trained(str(config), str(out / "run/best_model/model.pdparams"), str(tiny_data))
    return model, build_split(build(dic, str(config)), "val")


def paddleseg_logits(model, sample, test_config):
    """PaddleSeg's logits of one image under test_config, as core/val.py calls core/infer.py."""
    from paddleseg.core import infer

    im = paddle.to_tensor(np.asarray(sample["img"], dtype="float32")[None])
    slide = {k: test_config.get(k) for k in ("is_slide", "crop_size", "stride")}
    slide["is_slide"] = bool(slide["is_slide"])
    if test_config.get("aug_eval"):
        flips = {k: test_config.get(k, False) for k in ("flip_horizontal", "flip_vertical")}
        _, logit = infer.aug_inference(
            model, im, trans_info=sample["trans_info"], scales=test_config.get("scales", 1.0), **flips, **slide
        )
    else:
        _, logit = infer.inference(model, im, trans_info=sample["trans_info"], **slide)
    return logit


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_per_class_iou_is_paddleseg_s(name, trained):
    from segdistill.evaluate import evaluate

    model, ds = trained
    test_config = PROTOCOLS[name]
    protocol = Protocol.parse(test_config, "test_config")
    oracle = ConfusionMatrix(2)
    with paddle.no_grad():
        for i in range(len(ds)):
            sample = ds[i]
            label = np.asarray(sample["label"]).astype("int64").reshape(np.asarray(sample["label"]).shape[-2:])
            ref = paddleseg_logits(model, sample, test_config)
            assert list(ref.shape[2:]) == list(label.shape)
            oracle.update(paddle.argmax(ref, axis=1).numpy()[0], label)
            img = paddle.to_tensor(np.asarray(sample["img"], dtype="float32")[None])
            (got,) = batch_logits(model, img, protocol, [sample["trans_info"]])
            assert got.dtype == ref.dtype, name  # float64 when sliding, as PaddleSeg
            np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=0, atol=1e-5)
    want = oracle.compute()["class_iou"]
    assert 0 < oracle.compute()["miou"] < 1
    # Windows, views and images batched 4 at a time: the same per-class IoU.
    for batch_size in (1, 4):
        got = evaluate(model, ds, 2, protocol=protocol, batch_size=batch_size).compute()["class_iou"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"{name}, batch_size {batch_size}")


def test_protocols_differ_from_plain(trained):
    """The protocols change the logits (else the comparison above would prove nothing about them)."""
    model, ds = trained
    sample = ds[0]
    img = paddle.to_tensor(np.asarray(sample["img"], dtype="float32")[None])
    with paddle.no_grad():
        outs = {
            n: batch_logits(model, img, Protocol.parse(c, "t"), [sample["trans_info"]])[0] for n, c in PROTOCOLS.items()
        }
    plain = outs.pop("none").numpy()
    for name, out in outs.items():
        assert np.abs(out.numpy() - plain).max() > 1e-3, name


def test_auc_roc_is_paddleseg_s(trained):
    from paddleseg.utils import metrics

    from segdistill.evaluate import evaluate

    model, ds = trained
    scores = []
    evaluate(model, ds, 2, protocol=Protocol.parse({"auc_roc": True}, "t"), scores=scores)
    logits, labels = [], []
    with paddle.no_grad():
        for i in range(len(ds)):
            logit = paddle_nn_softmax(paddleseg_logits(model, ds[i], {}))
            logits.append(logit.numpy())
            labels.append(np.asarray(ds[i]["label"]).astype("int64").reshape(1, 1, *logit.shape[2:]))
    want = metrics.auc_roc(np.concatenate(logits), np.concatenate(labels), num_classes=2)
    got = auc_roc([p for p, _ in scores], [y for _, y in scores], 2, 255)
    assert 0.0 < got < 1.0
    assert abs(got - want) < 1e-9


def paddle_nn_softmax(x):
    return paddle.nn.functional.softmax(x, axis=1)


def test_windows_cover_the_image_as_paddleseg_s():
    """Rows/columns as slide_inference counts them; the last window ends at the edge; small images: one."""
    wins = windows(40, 48, (24, 24), (16, 12))
    assert len(wins) == 9 and wins[-1] == (16, 40, 24, 48)
    assert windows(10, 10, (24, 24), (16, 16)) == [(0, 10, 0, 10)]


@pytest.mark.parametrize(
    "test_config, message",
    [
        ({"is_slide": True, "crop_size": [8, 8], "strid": [4, 4]}, r"test_config\.strid: unknown key"),
        ({"is_slide": True, "crop_size": [8, 8]}, r"test_config\.stride: is_slide needs"),
        ({"is_slide": True, "crop_size": [8, 8], "stride": [9, 4]}, r"test_config\.stride: \[9, 4\] is larger"),
        ({"scales": []}, r"test_config\.scales: must be"),
        ({"aug_eval": "yes"}, r"test_config\.aug_eval: must be true or false"),
        ({"crop_size": [8]}, r"test_config\.crop_size: must be \[width, height\]"),
        ([1], r"test_config: must be a mapping"),
    ],
)
def test_bad_test_config_is_refused_by_name(test_config, message):
    with pytest.raises(SegDistillError, match=message):
        Protocol.parse(test_config, "cfg.yml: test_config")


def test_labels_and_records():
    assert Protocol.parse(None, "t").label() == "plain" and Protocol.parse({}, "t").plain
    assert Protocol.parse({"aug_eval": True, "scales": 0.5}, "t").label() == "scale 0.5"
    p = Protocol.parse({"aug_eval": True, "flip_horizontal": True, "flip_vertical": True, **SLIDE}, "t")
    assert p.label() == "flip hv + slide 24x24 stride 16x12"
    assert len(p.views()) == 4
    # Without aug_eval PaddleSeg ignores scales and flips: the record says what was done.
    rec = Protocol.parse({"scales": [0.5, 1.0], "flip_horizontal": True}, "t").record()
    assert rec["label"] == "plain" and rec["scales"] == [1.0] and rec["flip_horizontal"] is False


def test_unknown_key_is_refused_before_training(tiny_data, tmp_path):
    from segdistill.trainer import Trainer, TrainSpec

    cfg = yaml.safe_load(STUDENT.read_text())
    cfg["test_config"] = {"aug_eval": True, "scale": 0.5}
    config = tmp_path / "student.yml"
    config.write_text(yaml.safe_dump(cfg))
    spec = TrainSpec(config=str(config), save_dir=str(tmp_path / "run"), data_root=str(tiny_data), iters=2)
    with pytest.raises(SegDistillError, match=r"student\.yml: test_config\.scale: unknown key"):
        Trainer(spec, log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_the_study_s_test_config_enters_the_run_s_identity(tiny_data, tmp_path):
    """No override: the run key of before (nothing added to its identity); an override: another key, so a
    changed protocol trains and evaluates again instead of resuming."""
    from segdistill.trainer import Trainer, TrainSpec

    def key(**kw):
        spec = TrainSpec(config=str(STUDENT), save_dir=str(tmp_path / "run"), data_root=str(tiny_data), iters=2, **kw)
        return Trainer(spec, log=lambda m: None).run_key

    plain, half = key(), key(evaluate={"test_config": {"aug_eval": True, "scales": 0.5}})
    assert plain != half != key(evaluate={"test_config": {}})
    assert key(evaluate={"test_config": "yaml"}) == plain


def test_a_pp_liteseg_yaml_with_its_test_config_through_the_workflow(patched_teacher, tmp_path):
    """PP-LiteSeg as the student with its Cityscapes recipes' protocol (half scale), a provided teacher under its
    own YAML's (none): every record states its model's protocol, the training chose its checkpoint under it,
    the summary says it per arm, the cost table times it and the export is checked under it."""
    from conftest import run_snakemake, tiny_config

    overlay = tmp_path / "configs/pp_liteseg_half.yml"
    overlay.parent.mkdir()
    base = str(ROOT / "tests/configs/pp_liteseg_tiny.yml")
    overlay.write_text(yaml.safe_dump({"_base_": base, "iters": 2, "test_config": {"aug_eval": True, "scales": 0.5}}))
    config = tiny_config(
        tmp_path,
        teacher={
            "config": str(ROOT / "tests/configs/teacher_tiny.yml"),
            "weights": str(Path(patched_teacher).parent / "run/best_model/model.pdparams"),
        },
        student={"config": str(overlay)},
        distill={"kl": {"terms": [{"student": "logits", "teacher": "logits", "loss": "kl", "weight": 3}]}},
        seeds=[0],
        train={"save_interval": 1, "log_iters": 1, "keep_checkpoint_max": 1},
        report={"latency_runs": 1},
    )
    targets = ["results/report/summary.md", "results/report/cost.csv", "results/export/export.json"]
    run_snakemake(tmp_path, *targets, "--cores", "1", "--configfile", config)
    res = tmp_path / "results"
    labels = {
        run: json.loads((res / f"eval/{run}.json").read_text())["protocol"]["label"]
        for run in ("teacher/seed0", "student/seed0", "distilled/kl/seed0")
    }
    assert labels == {"teacher/seed0": "plain", "student/seed0": "scale 0.5", "distilled/kl/seed0": "scale 0.5"}
    rec = json.loads((res / "eval/student/seed0.json").read_text())
    assert rec["protocol"]["aug_eval"] is True and rec["protocol"]["scales"] == [0.5]
    summary = (res / "report/summary.md").read_text()
    assert "teacher: plain; student: scale 0.5; distilled (kl): scale 0.5" in summary
    cost = pd.read_csv(res / "report/cost.csv").set_index("model")
    assert cost.loc["student", "protocol"] == "scale 0.5" and cost.loc["teacher", "protocol"] == "plain"
    export = json.loads((res / "export/export.json").read_text())
    assert export["protocol"] == "scale 0.5" and export["max_abs_diff"] <= export["tolerance"]
