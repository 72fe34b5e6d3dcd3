"""Data sets PaddleSeg names by type, listed by name and never downloaded; PaddleSeg's own classes are the oracle
where they are right (the pairs of a complete set, ADE20K's labels)."""

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from paddleseg_layouts import make_ade20k, make_cityscapes, make_cocostuff, make_context, make_voc, section
from segdistill import paddleseg_sets as sets
from segdistill.data.splits import plan_splits, write_splits
from segdistill.errors import SegDistillError

TINY = Path(__file__).parent / "configs" / "student_tiny.yml"


def _paddleseg_pairs(kind, root, mode):
    from segdistill.paddle_env import paddle  # noqa: F401

    from paddleseg.cvlibs import manager

    ds = manager.DATASETS[kind](transforms=[], dataset_root=str(root), mode=mode)
    return [tuple(Path(p).relative_to(root).as_posix() for p in pair) for pair in ds.file_list]


@pytest.mark.parametrize(
    "kind,make,modes",
    [
        ("Cityscapes", make_cityscapes, ("train", "val")),
        ("CocoStuff", make_cocostuff, ("train", "val")),
        ("PascalVOC", make_voc, ("train", "val")),
        ("PascalContext", make_context, ("train", "val")),
    ],
)
def test_a_complete_set_gives_paddlesegs_pairs(tmp_path, kind, make, modes):
    root = make(tmp_path / kind)
    for mode in modes:
        assert sets.list_pairs(section(kind, root, mode), "s.yml") == _paddleseg_pairs(kind, root, mode)


def test_ade20k_lists_by_name_in_sorted_order_whatever_the_file_system(tmp_path):
    root = make_ade20k(tmp_path / "ade")
    pairs = sets.list_pairs(section("ADE20K", root, "train"), "s.yml")
    assert pairs == sorted(pairs) and len(pairs) == 6
    assert sorted(pairs) == sorted(_paddleseg_pairs("ADE20K", root, "train"))  # same pairs, os.listdir order there
    assert all(Path(i).stem == Path(lab).stem for i, lab in pairs)


def test_a_missing_label_names_the_image_where_paddleseg_mispairs(tmp_path):
    root = make_cityscapes(tmp_path / "cs", counts={"train": 4})
    labels = sorted((root / "gtFine/train").rglob("*.png"))
    labels[1].unlink()
    paddleseg = _paddleseg_pairs("Cityscapes", root, "train")
    assert any(Path(i).name.split("_leftImg8bit")[0] != Path(lab).name.split("_gtFine")[0] for i, lab in paddleseg)
    with pytest.raises(SegDistillError) as err:
        sets.list_pairs(section("Cityscapes", root, "train"), "s.yml")
    image = labels[1].name.replace("_gtFine_labelTrainIds", "_leftImg8bit")
    assert "s.yml" in str(err.value) and image in str(err.value) and "has no label" in str(err.value)


def test_a_missing_root_stops_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for kind in sets.TYPES:
        with pytest.raises(SegDistillError, match="dataset_root data/nope does not exist.*never downloads"):
            sets.list_pairs(section(kind, "data/nope", "train"), "s.yml")
    assert os.listdir(tmp_path) == []


def test_voc_trainaug_needs_the_augmented_labels(tmp_path):
    root = make_voc(tmp_path / "voc")
    with pytest.raises(SegDistillError, match="trainaug needs .*aug.txt.*SegmentationClassAug"):
        sets.list_pairs(section("PascalVOC", root, "trainaug"), "s.yml")
    root = make_voc(tmp_path / "voc2", aug=3)
    pairs = sets.list_pairs(section("PascalVOC", root, "trainaug"), "s.yml")
    assert len(pairs) == 9 and sum("SegmentationClassAug" in lab for _, lab in pairs) == 3


def test_generic_dataset_reads_its_list_files(tmp_path):
    root = make_ade20k(tmp_path / "d")
    lines = [
        f"images/training/{p.stem}.jpg annotations/training/{p.stem}.png"
        for p in sorted((root / "images/training").iterdir())
    ]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\nimages/training/nope.jpg annotations/training/x.png\n")
    sec = section("Dataset", root, "train", num_classes=151, train_path=str(tmp_path / "train.txt"))
    with pytest.raises(SegDistillError, match=r"train.txt:7: image .*nope.jpg does not exist"):
        sets.list_pairs(sec, "s.yml")
    assert sets.section_classes(sec, "s.yml") == [f"class_{i}" for i in range(151)]


def test_class_names_of_the_known_types():
    counts = {k: len(sets.section_classes({"type": k}, "s")) for k in sets.TYPES if k != "Dataset"}
    assert counts == {"Cityscapes": 19, "ADE20K": 150, "PascalVOC": 21, "CocoStuff": 171, "PascalContext": 60}


def _study_yaml(tmp_path, kind, root, train="train", val="val", **extra):
    path = tmp_path / "student.yml"
    dic = yaml.safe_load(TINY.read_text())  # the tiny student (its distill_loss too), on this data set
    dic["model"].pop("num_classes")
    dic.update(train_dataset=section(kind, root, train, **extra), val_dataset=section(kind, root, val, **extra))
    path.write_text(yaml.safe_dump(dic))
    return path


def test_splits_are_disjoint_complete_and_drawn_by_seed(tmp_path):
    root = make_cityscapes(tmp_path / "cs", counts={"train": 10, "val": 3})
    cfg = _study_yaml(tmp_path, "Cityscapes", root)
    out = {s: tmp_path / f"{s}.txt" for s in ("train", "val", "test")}
    info = write_splits(cfg, 3, 0, out, tmp_path / "v.json")
    lines = {s: out[s].read_text().splitlines() for s in out}
    assert info["splits"] == {"train": 7, "val": 3, "test": 3}
    assert not set(lines["train"]) & set(lines["val"]) and len(set(lines["train"]) | set(lines["val"])) == 10
    assert all(line.startswith("leftImg8bit/val/") for line in lines["test"])
    again = plan_splits(yaml.safe_load(cfg.read_text()), cfg, 3, 0)["splits"]["val"]
    other = plan_splits(yaml.safe_load(cfg.read_text()), cfg, 3, 1)["splits"]["val"]
    assert [f"{i} {lab}" for i, lab in again] == lines["val"] and other != again


def test_label_values_are_checked_after_the_types_mapping(tmp_path):
    root = make_ade20k(tmp_path / "ade")
    cfg = _study_yaml(tmp_path, "ADE20K", root)
    info = write_splits(cfg, 2, 0, {s: tmp_path / f"{s}.txt" for s in ("train", "val", "test")})
    assert max(v for v in info["label_values"] if v != 255) <= 149 and 255 in info["label_values"]
    bad = sorted((root / "annotations/validation").iterdir())[1]
    lab = np.asarray(Image.open(bad)).copy()
    lab[3, 3] = 200
    Image.fromarray(lab).save(bad)
    small = sorted((root / "annotations/training").iterdir())[0]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small)
    with pytest.raises(SegDistillError) as err:
        write_splits(cfg, 2, 0, {s: tmp_path / f"{s}.txt" for s in ("train", "val", "test")})
    text = str(err.value)
    assert "2 problem(s)" in text and str(bad) in text and "200" in text and "after subtracting 1" in text
    assert str(small) in text and "same size" in text


def test_the_shift_transform_gives_paddlesegs_ade20k_labels(tmp_path):
    from segdistill.paddle_env import paddle  # noqa: F401

    from paddleseg.cvlibs import manager

    from segdistill.paddleseg_yaml import build

    root = make_ade20k(tmp_path / "ade")
    out = {s: tmp_path / f"{s}.txt" for s in ("train", "val", "test")}
    write_splits(_study_yaml(tmp_path, "ADE20K", root), 0, 0, out)
    for mode, split in (("train", "train"), ("val", "test")):
        ours = {
            "type": "Dataset",
            "dataset_root": str(root),
            "num_classes": 150,
            "mode": "val" if mode == "val" else "train",
            "train_path": str(out["train"]),
            "val_path": str(out["test"]),
            "transforms": sets.label_shift_transform(sets.TYPES["ADE20K"]) + [{"type": "Normalize"}],
        }
        dic = dict(yaml.safe_load(TINY.read_text()), train_dataset=ours, val_dataset=ours)
        dic["model"]["num_classes"] = 150
        mine = build(dic).train_dataset
        theirs = manager.DATASETS["ADE20K"](transforms=[], dataset_root=str(root), mode=mode)
        by_image = {Path(i).name: k for k, (i, _) in enumerate(theirs.file_list)}
        for k, (image, _) in enumerate(mine.file_list):
            np.testing.assert_array_equal(
                np.squeeze(mine[k]["label"]), np.squeeze(theirs[by_image[Path(image).name]]["label"]), err_msg=split
            )


def _study(tmp_path, student, teacher=None, **data):
    from segdistill import study

    config = {
        "data": {"source": "paddleseg", "paddleseg": {"selection_images": 1}, **data},
        "teacher": {"config": str(teacher or student)},
        "student": {"config": str(student)},
        "distill": {"kl": {"terms": [{"loss": "kl"}]}},
        "evaluate": {"splits": ["val", "test"]},
    }
    study.fill_class_names(config)
    return config


def test_the_study_reads_class_names_and_refuses_what_cannot_work(tmp_path):
    from segdistill import study

    root = make_voc(tmp_path / "voc")
    config = _study(tmp_path, _study_yaml(tmp_path, "PascalVOC", root))
    assert config["data"]["class_names"][:2] == ["background", "aeroplane"] and len(config["data"]["class_names"]) == 21
    study.preflight(config)
    with pytest.raises(SegDistillError, match="names 2 classes but student.config .* PascalVOC, which has 21"):
        study.preflight(dict(config, data=dict(config["data"], class_names=["a", "b"])))
    no_selection = dict(config, data=dict(config["data"], paddleseg={"selection_images": 0}))
    with pytest.raises(SegDistillError, match="selection_images is 0: there is no val split"):
        study.preflight(no_selection)
    study.preflight(dict(no_selection, evaluate={"splits": ["test"]}))
    assert not study.has_selection(no_selection) and study.has_selection(config)
    other = tmp_path / "other.yml"
    modes = (("train_dataset", "train"), ("val_dataset", "val"))
    other.write_text(yaml.safe_dump({k: section("OpticDiscSeg", root, m) for k, m in modes}))
    with pytest.raises(SegDistillError, match="reads the data set types Cityscapes, ADE20K"):
        study.preflight(dict(config, student={"config": str(other)}, teacher={"config": str(other)}))


def test_the_study_copy_reads_the_split_lists_with_the_types_mapping(tmp_path):
    from segdistill import study

    root = make_ade20k(tmp_path / "ade")
    config = _study(tmp_path, _study_yaml(tmp_path, "ADE20K", root))
    dic = study.experiment(config, "student")
    for key in ("train_dataset", "val_dataset"):
        ds = dic[key]
        assert ds["type"] == "Dataset" and ds["num_classes"] == 150 and ds["dataset_root"] == os.path.normpath(root)
        assert ds["train_path"] == "results/data/splits/train.txt" and ds["test_path"] == "results/data/splits/test.txt"
        assert ds["transforms"][0] == {"type": "ShiftLabels", "shift": 1, "ignore_index": 255}
    assert dic["train_dataset"]["mode"] == "train" and dic["val_dataset"]["mode"] == "val"
