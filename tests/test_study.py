"""The study's own data sets and teachers: generic-layout configs, provided teacher weights, tar archives,
list-file overrides, and the command line's version."""

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, STUDENT, TEACHER, classless_configs
from data_helpers import make_generic_dataset
from segdistill import study
from segdistill.errors import SegDistillError
from segdistill.paddleseg_yaml import build, read_yaml

CLASSES = ["sky", "road", "car"]


def folder_study(tmp_path, **teacher):
    root = make_generic_dataset(tmp_path / "mine", CLASSES, counts={"train": 2, "val": 1, "test": 1})
    configs = classless_configs(tmp_path)
    return {
        "data": {"source": "folder", "class_names": CLASSES, "folder": {"root": str(root)}},
        "teacher": {"config": str(configs["teacher"]), "per_seed": True, **teacher},
        "student": {"config": str(configs["student"])},
        "distill": {"kl": {"terms": None}},
        "sweep": None,
        "seeds": [0, 1],
        "evaluate": {"splits": ["val", "test"]},
        "pretrained_backbones": True,
    }


def test_folder_source_gives_generic_dataset_configs(tmp_path):
    cfg = folder_study(tmp_path)
    study.preflight(cfg)
    dic = study.experiment(cfg, "student")
    root = cfg["data"]["folder"]["root"]
    for key, mode in (("train_dataset", "train"), ("val_dataset", "val")):
        ds = dic[key]
        assert ds["type"] == "Dataset" and ds["mode"] == mode and ds["num_classes"] == 3
        assert ds["train_path"] == f"{root}/train_list.txt" and ds["test_path"] == f"{root}/test_list.txt"
        assert ds["transforms"] == yaml.safe_load(Path(STUDENT).read_text())[key]["transforms"]
    assert dic["model"]["num_classes"] == 3
    cfg["data"]["folder"]["val_list"] = "lists/v.txt"
    assert study.experiment(cfg, "student")["val_dataset"]["val_path"] == f"{root}/lists/v.txt"
    assert study.list_files(cfg) == {"train": "train_list.txt", "val": "lists/v.txt", "test": "test_list.txt"}


def test_class_count_of_the_dataset_type_is_checked_with_paddleseg(tmp_path):
    # The optic disc type implies 2 classes; a YAML that states none passes preflight, the registry check fails.
    cfg = folder_study(tmp_path)
    cfg["data"] = {"source": "optic_disc", "class_names": CLASSES, "optic_disc": {}}
    study.preflight(cfg)
    with pytest.raises(SegDistillError, match="data set type OpticDiscSeg has 2 classes but data.class_names"):
        study.checked_experiments(cfg)


def test_synthetic_disc_and_cup_is_read_as_a_generic_dataset(tmp_path):
    """The generated set with the cup has three classes, more than OpticDiscSeg's two: the study's YAMLs read it as
    PaddleSeg's Dataset over its list files; a label set the generator does not draw is refused by key."""
    cfg = folder_study(tmp_path)
    cfg["data"] = {"source": "synthetic", "class_names": ["background", "optic_disc", "optic_cup"]}
    study.preflight(cfg)
    dic = study.experiment(cfg, "student")
    root = study.data_root(cfg)
    assert root == "resources/data/synthetic"
    for key in ("train_dataset", "val_dataset"):
        assert dic[key]["type"] == "Dataset" and dic[key]["num_classes"] == 3
        assert dic[key]["val_path"] == f"{root}/val_list.txt" and dic[key]["test_path"] == f"{root}/test_list.txt"
    assert dic["model"]["num_classes"] == 3
    assert study.checked_experiments(cfg)["student"]["train_dataset"]["type"] == "Dataset"
    cfg["data"]["class_names"] = ["background", "optic_disc"]
    assert study.experiment(cfg, "student")["train_dataset"]["type"] == "OpticDiscSeg"
    cfg["data"]["class_names"] = CLASSES
    with pytest.raises(SegDistillError, match=r"data.class_names: the synthetic set labels .* not \[sky, road, car\]"):
        study.preflight(cfg)


def test_a_data_set_key_inherited_through_base_is_named_before_training(tmp_path):
    """A zoo YAML's generic `Dataset` (train_path, num_classes) under an override to the synthetic set's
    `OpticDiscSeg`: merged through `_base_`, the section holds keys OpticDiscSeg does not take. The study's check
    names file, section and keys; `_inherited_: false` replaces the base's section and passes."""
    base = yaml.safe_load(Path(STUDENT).read_text())
    for key, mode in (("train_dataset", "train"), ("val_dataset", "val")):
        base[key].update(type="Dataset", num_classes=2, **{f"{mode}_path": f"data/optic_disc_seg/{mode}_list.txt"})
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo/base.yml").write_text(yaml.safe_dump(base))
    section = {"type": "OpticDiscSeg", "transforms": [{"type": "Normalize"}]}
    overlay = tmp_path / "overlay.yml"
    overlay.write_text(yaml.safe_dump({"_base_": "zoo/base.yml", "train_dataset": section}))
    cfg = {
        "data": {"source": "synthetic", "class_names": ["background", "optic_disc"]},
        "teacher": {"config": str(TEACHER)},
        "student": {"config": str(overlay)},
    }
    with pytest.raises(
        SegDistillError,
        match=rf"student.config {overlay}: train_dataset: OpticDiscSeg takes no 'num_classes', 'train_path' "
        r"\(it takes dataset_root, transforms, mode, edge\); .* `_inherited_: false`",
    ):
        study.checked_experiments(cfg)
    with pytest.raises(SegDistillError, match=rf"{overlay}: train_dataset: OpticDiscSeg takes no 'num_classes'"):
        build(read_yaml(overlay), overlay)  # what `segdistill train` builds from
    overlay.write_text(
        yaml.safe_dump(
            {
                "_base_": "zoo/base.yml",
                "train_dataset": {"_inherited_": False, **section, "mode": "train"},
                "val_dataset": {"_inherited_": False, **section, "mode": "val"},
            }
        )
    )
    dic = study.checked_experiments(cfg)["student"]
    assert dic["train_dataset"] == {**section, "mode": "train", "dataset_root": "resources/data/synthetic"}


def test_bf16_o2_over_several_gpus_is_refused_before_any_job(tmp_path):
    cfg = dict(folder_study(tmp_path), train={"precision": "bf16", "amp_level": "O2"}, gpus_per_job=2)
    with pytest.raises(
        SegDistillError,
        match="train.precision bf16 with train.amp_level O2 and gpus_per_job 2 is refused: it has not been run",
    ):
        study.preflight(cfg)
    study.preflight(dict(cfg, gpus_per_job=1))
    study.preflight(dict(cfg, train={"precision": "bf16", "amp_level": "O1"}))


def test_missing_folder_is_named(tmp_path):
    cfg = folder_study(tmp_path)
    cfg["data"]["folder"]["root"] = str(tmp_path / "nope")
    with pytest.raises(SegDistillError, match="data.folder.root: folder not found"):
        study.preflight(cfg)


def test_url_source_paths_depend_on_the_url():
    a = {"data": {"source": "url", "url": {"url": "https://example.org/a/data.tar.gz"}}}
    b = {"data": {"source": "url", "url": {"url": "https://example.org/b/data.tar.gz"}}}
    assert study.data_root(a) != study.data_root(b)
    assert study.data_archive(a).endswith("/data.tar.gz") and study.data_archive(a) != study.data_archive(b)


def test_teacher_weights_rules(tmp_path):
    with pytest.raises(SegDistillError, match=r"teacher.sha256 is not set.*pickle"):
        study.check_teacher_weights("https://example.org/t.pdparams", None)
    study.check_teacher_weights("https://example.org/t.pdparams", "a" * 64)
    with pytest.raises(SegDistillError, match="file not found"):
        study.check_teacher_weights(str(tmp_path / "nope.pdparams"), None)
    with pytest.raises(SegDistillError, match="64 lowercase hex"):
        study.check_teacher_weights("https://example.org/t.pdparams", "ABC")


def test_provided_teacher_is_one_run_and_never_trained(tmp_path):
    weights = tmp_path / "t.pdparams"
    weights.write_bytes(b"x")
    cfg = folder_study(tmp_path, weights=str(weights))
    assert study.trained_arms(cfg) == ["student"]
    assert [r for r in study.runs(cfg) if r.startswith("teacher/")] == ["teacher/seed0"]  # per_seed is moot
    assert study.teacher_seed(cfg, 1) == 0


def test_provide_teacher_checks_digest_and_every_parameter(tmp_path):
    from segdistill.paddle_env import paddle

    from segdistill.paddleseg_yaml import build_model, write_yaml
    from segdistill.provided_teacher import provide_teacher

    cfg = folder_study(tmp_path)
    config = tmp_path / "teacher_study.yml"
    write_yaml(study.experiment(cfg, "teacher"), config)
    good = tmp_path / "good.pdparams"
    paddle.save(build_model(study.experiment(cfg, "teacher"), config).state_dict(), str(good))
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    out, record = tmp_path / "run/model.pdparams", tmp_path / "run/provided.json"

    with pytest.raises(SegDistillError, match=f"SHA-256 is {digest} but teacher.sha256 is {'0' * 64}"):
        provide_teacher(str(good), "0" * 64, str(config), str(out), str(record))
    # A 2-class model's weights do not fit the 3-class teacher: the key and both shapes are named.
    two = tmp_path / "two.pdparams"
    paddle.save(build_model(yaml.safe_load(Path(TEACHER).read_text()), TEACHER).state_dict(), str(two))
    with pytest.raises(SegDistillError, match=r"teacher.weights .*shape mismatch.*\[3, .*\[2, |shape mismatch"):
        provide_teacher(str(two), None, str(config), str(out), str(record))
    assert not out.exists() and not record.exists()

    info = provide_teacher(str(good), digest, str(config), str(out), str(record))
    assert out.read_bytes() == good.read_bytes() and info["sha256"] == digest
    with pytest.raises(SegDistillError, match="teacher.sha256 is not set"):
        provide_teacher("http://127.0.0.1:9/t.pdparams", None, str(config), str(out), str(record))


def test_tar_gz_data_set_extracts_safely(tmp_path):
    from segdistill.data import safe_extract

    src = make_generic_dataset(tmp_path / "src", CLASSES, counts={"train": 2, "val": 1})
    archive = tmp_path / "data.bin"  # no telling name: the format is read from the content
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="mine")
    root = safe_extract(archive, tmp_path / "out")
    assert root == tmp_path / "out/mine" and (root / "train_list.txt").is_file()

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 0
        tf.addfile(info)
    with pytest.raises(SegDistillError, match=r"refusing member '../escape.txt'"):
        safe_extract(evil, tmp_path / "evil_out")
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("data/x")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(SegDistillError, match="is a link"):
        safe_extract(link, tmp_path / "link_out")
    assert not (tmp_path / "evil_out").exists() and not (tmp_path / "link_out").exists()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(SegDistillError, match="truncated or corrupt"):
        safe_extract(cut, tmp_path / "cut_out")


def test_generic_layout_validation_errors(tmp_path):
    from segdistill.data import validate_dataset

    root = make_generic_dataset(
        tmp_path / "d", CLASSES, counts={"train": 2, "val": 1}, list_names={"val": "lists/v.txt"}
    )
    info = validate_dataset(root, 3, list_names={"val": "lists/v.txt"})
    assert info["splits"] == {"train": 2, "val": 1} and set(info["label_values"]) <= {0, 1, 2}
    with pytest.raises(SegDistillError, match=r"list file .*test_list.txt for the required 'test' split"):
        validate_dataset(root, 3, required_splits=("train", "val", "test"), list_names={"val": "lists/v.txt"})
    with pytest.raises(SegDistillError, match=r"values 2 outside 0..1"):
        validate_dataset(root, 2, list_names={"val": "lists/v.txt"})


def test_version_comes_from_package_metadata():
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "segdistill.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"segdistill {version('segdistill')}"


def test_provided_teacher_needs_no_teacher_backbone():
    optic = ROOT / "config/paddleseg/optic_disc"
    cfg = {
        "teacher": {"config": str(optic / "deeplabv3p_resnet50_os8_optic_disc_512x512_1k_teacher.yml")},
        "student": {"config": str(optic / "deeplabv3p_resnet18_os8_optic_disc_512x512_1k_student.yml")},
        "pretrained_backbones": True,
    }
    assert study.backbone_urls(cfg) == ["https://bj.bcebos.com/paddleseg/dygraph/resnet50_vd_ssld_v2.tar.gz"]
    cfg["teacher"]["weights"] = "weights/teacher.pdparams"
    assert study.backbone_urls(cfg) == []


def test_teacher_save_interval_applies_to_the_teacher_only(tmp_path):
    config = folder_study(tmp_path, save_interval=50)
    config["train"] = {"save_interval": 20, "log_iters": 10}
    assert study.train_flags(config, "teacher") == {"save_interval": 50, "log_iters": 10}
    assert study.train_flags(config, "student") == {"save_interval": 20, "log_iters": 10}
    config["teacher"]["save_interval"] = None
    assert study.train_flags(config, "teacher")["save_interval"] == 20
    assert config["train"]["save_interval"] == 20  # the study's config is not changed


def test_outside_list_paths_only_for_a_folder_that_allows_them():
    from segdistill.schema import problem

    schema = ROOT / "workflow/schemas/config.schema.yaml"
    folder = {"source": "folder", "class_names": ["a", "b"], "folder": {"root": "d"}}
    base = {"teacher": {"config": "t.yml"}, "student": {"config": "s.yml"}, "distill": {"kl": {"terms": None}}}
    assert not study.allow_outside_paths({"data": folder})
    allowed = dict(folder, folder={"root": "d", "allow_outside_paths": True})
    assert study.allow_outside_paths({"data": allowed}) and problem(dict(base, data=allowed), schema) is None
    url = {"source": "url", "class_names": ["a", "b"], "url": {"url": "https://x/d.zip", "allow_outside_paths": True}}
    assert "data.url.allow_outside_paths: unknown key" in problem(dict(base, data=url), schema)
    assert not study.allow_outside_paths({"data": dict(url, folder={"root": "d", "allow_outside_paths": True})})
