"""Config loading, teacher patching with strict loading, and study-level checks."""

import copy
from pathlib import Path

from segdistill.paddle_env import paddle

import pytest
import yaml

from conftest import ROOT, STUDENT, TEACHER, TINY_STUDY
from segdistill import study
from segdistill.errors import SegDistillError
from segdistill.paddleseg_yaml import base_files, build_model, experiment_dict, load_weights, patch_teacher, read_yaml


def tiny_study():
    cfg = yaml.safe_load(TINY_STUDY.read_text())
    for role in ("teacher", "student"):
        cfg[role]["config"] = str(ROOT / cfg[role]["config"])
    cfg.setdefault("sweep", None)
    cfg.setdefault("pretrained_backbones", True)
    return cfg


def test_patch_teacher_writes_a_copy_and_loads_every_parameter(tmp_path):
    model = build_model(experiment_dict(TEACHER), TEACHER)
    weights = tmp_path / "teacher.pdparams"
    paddle.save(model.state_dict(), str(weights))
    before = Path(TEACHER).read_text()
    out = tmp_path / "patched.yml"
    patch_teacher(TEACHER, weights, out)
    assert Path(TEACHER).read_text() == before  # the user's file is never edited
    dic = read_yaml(out)
    assert dic["model"]["pretrained"] == str(weights)
    loaded = build_model(experiment_dict(out), out)
    for k, v in model.state_dict().items():
        assert (loaded.state_dict()[k].numpy() == v.numpy()).all(), k


def _load_changed(tmp_path, change):
    """The tiny student loading its own weights after `change(state)`."""
    student = build_model(experiment_dict(STUDENT), STUDENT)
    state = dict(student.state_dict())
    change(state)
    paddle.save(state, str(tmp_path / "bad.pdparams"))
    load_weights(student, tmp_path / "bad.pdparams", source="test")


def test_weights_of_another_model_name_the_mismatch(tmp_path):
    with pytest.raises(SegDistillError, match=r"missing key\(s\), e.g. backbone"):
        _load_changed(tmp_path, lambda state: state.pop(next(iter(state))))


def test_weights_with_wrong_shape_name_the_key(tmp_path):
    def wider(state):
        key = next(k for k, v in state.items() if k.startswith("head.decoder") and len(v.shape) == 4)
        state[key] = paddle.zeros([state[key].shape[0] + 1, *state[key].shape[1:]])

    with pytest.raises(SegDistillError, match="shape mismatch.*head.decoder"):
        _load_changed(tmp_path, wider)


def test_missing_and_corrupt_weight_files(tmp_path):
    student = build_model(experiment_dict(STUDENT), STUDENT)
    with pytest.raises(SegDistillError, match="not found"):
        load_weights(student, tmp_path / "nope.pdparams")
    junk = tmp_path / "junk.pdparams"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(SegDistillError, match="cannot read weights"):
        load_weights(student, junk)


def test_backbone_url_without_cache_stops_with_instructions(tmp_path):
    url_cfg = ROOT / "config/paddleseg/optic_disc/deeplabv3p_resnet50_os8_optic_disc_512x512_1k_teacher.yml"
    with pytest.raises(SegDistillError, match="fetch-backbone.*pretrained: null"):
        experiment_dict(url_cfg, pretrained_cache=str(tmp_path))
    assert experiment_dict(url_cfg, pretrained_backbone=False)["model"]["backbone"]["pretrained"] is None


def test_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("model: {type: DeepLabV3P}\n")
    with pytest.raises(SegDistillError, match=r"bad.yml: missing required key 'train_dataset'"):
        experiment_dict(bad)
    bad.write_text("a: [1\n")
    with pytest.raises(SegDistillError, match="not valid YAML"):
        read_yaml(bad)


def test_study_runs_and_checks():
    cfg = tiny_study()
    study.check(cfg)
    assert study.runs(cfg) == [
        "teacher/seed0",
        "student/seed0",
        "student/seed1",
        "distilled/kl/seed0",
        "distilled/kl/seed1",
        "distilled/kl_cwd/seed0",
        "distilled/kl_cwd/seed1",
    ]
    assert study.parse_run("distilled/kl_cwd/seed1") == {"arm": "distilled", "method": "kl_cwd", "seed": 1}


def test_study_rejects_class_count_mismatch(tmp_path):
    cfg = tiny_study()
    dic = read_yaml(cfg["teacher"]["config"])
    dic["model"]["num_classes"] = 3
    other = tmp_path / "teacher3.yml"
    other.write_text(yaml.safe_dump(dic))
    cfg["teacher"]["config"] = str(other)
    # Caught while the workflow parses (no paddle needed), naming the file and both counts.
    with pytest.raises(SegDistillError, match=r"teacher3.yml: model.num_classes is 3 but data.class_names names 2"):
        study.preflight(cfg)


def test_study_rejects_unknown_loss_and_bad_sweep():
    cfg = tiny_study()
    bad = copy.deepcopy(cfg)
    bad["distill"]["kl_cwd"]["terms"][1]["loss"] = "nope"
    with pytest.raises(SegDistillError, match=r"distill.kl_cwd.terms\[1\].loss: unknown loss 'nope'"):
        study.check(bad)
    bad = copy.deepcopy(cfg)
    bad["distill"]["kl_cwd"]["terms"][1]["options"] = {"tau": 4}
    with pytest.raises(
        SegDistillError,
        match=r"distill.kl_cwd.terms\[1\] \(term 'cwd_aspp'\).options: loss 'cwd' "
        r"has no option 'tau'.*Its options: temperature",
    ):
        study.check(bad)
    bad = copy.deepcopy(cfg)
    bad["sweep"] = {"method": "kl_cwd", "grid": {"cwd_aspp.alpha": [1]}}
    with pytest.raises(SegDistillError, match="must end in weight or temperature"):
        study.methods(bad)


def test_sweep_expands_into_named_methods():
    cfg = tiny_study()
    cfg["sweep"] = {"method": "kl_cwd", "grid": {"cwd_aspp.weight": [1, 5], "temperature": [2.0]}}
    methods = study.methods(cfg)
    name = "kl_cwd~cwd_aspp.weight=1~temperature=2"
    assert name in methods and "kl_cwd~cwd_aspp.weight=5~temperature=2" in methods
    terms = {t["name"]: t for t in methods[name]["terms"]}
    assert terms["cwd_aspp"]["weight"] == 1 and terms["kl_logits"]["weight"] == 3
    assert terms["kl_logits"]["temperature"] == 2.0


def test_layers_lists_every_sublayer_with_its_shape():
    from segdistill.layers import list_layers

    text = list_layers(str(STUDENT), size=(32, 32))
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "[1, 256, 4, 4]" in lines["head.aspp"] and "ASPPModule" in lines["head.aspp"]
    assert "[1, 2, 32, 32]" in lines["logits"]
    model = build_model(experiment_dict(STUDENT), STUDENT)
    assert set(lines) == {n for n, _ in model.named_sublayers()} | {"logits"}


def test_base_files_follow_the_inheritance_chain(tmp_path):
    """The workflow lists a YAML's `_base_` files as inputs, so editing only a base file reruns its readers."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yml").write_text("batch_size: 4\niters: 80\n")
    (tmp_path / "sub/mid.yml").write_text("_base_: ../root.yml\niters: 60\n")
    (tmp_path / "sub/leaf.yml").write_text("_base_: mid.yml\nbatch_size: 2\n")
    assert base_files(tmp_path / "sub/leaf.yml") == [tmp_path / "sub/mid.yml", tmp_path / "sub/../root.yml"]
    assert read_yaml(tmp_path / "sub/leaf.yml") == {"batch_size": 2, "iters": 60}
    assert base_files(tmp_path / "root.yml") == []
    shipped = ROOT / "config/paddleseg/cpu/deeplabv3p_resnet18_os16_synthetic_64x64_student.yml"
    assert [p.name for p in base_files(shipped)] == ["deeplabv3p_resnet18_os8_synthetic_64x64_student.yml"]
