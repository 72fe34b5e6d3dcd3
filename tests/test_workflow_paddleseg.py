"""data.source paddleseg: the data set the zoo's YAMLs name by type, in its own layout, split by the study.

One whole study (Cityscapes layout) runs to its report; ADE20K and VOC go through the data stage and a dry run;
the refusals stop before any training with a message naming the file or path."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import ROOT, job_counts, run_snakemake
from paddleseg_layouts import make_ade20k, make_cityscapes, make_voc
from segdistill import paddleseg_sets as sets


def _yaml(role: str, kind: str, root: str, size, train_mode="train", val_mode="val") -> dict:
    """The tiny teacher or student YAML on a data set PaddleSeg names by type (num_classes left to the type)."""
    dic = yaml.safe_load((ROOT / f"tests/configs/{role}_tiny.yml").read_text())
    dic["model"].pop("num_classes")
    for key, mode in (("train_dataset", train_mode), ("val_dataset", val_mode)):
        dic[key] = {
            "type": kind,
            "dataset_root": root,
            "mode": mode,
            "transforms": [{"type": "Resize", "target_size": list(size)}, {"type": "Normalize"}],
        }
    dic["batch_size"] = 2
    dic["iters"] = 2
    return dic


def paddleseg_study(workdir, kind, root="data/set", selection=2, teacher_root=None, **yaml_modes) -> object:
    """A study on `kind` at `root` (relative to `workdir`), student and teacher YAMLs written into `workdir`."""
    size = (32, 16) if kind == "Cityscapes" else (16, 16)
    for role in ("teacher", "student"):
        dic = _yaml(role, kind, teacher_root if role == "teacher" and teacher_root else root, size, **yaml_modes)
        (workdir / f"{role}.yml").write_text(yaml.safe_dump(dic, sort_keys=False))
    study = {
        "data": {"source": "paddleseg", "paddleseg": {"selection_images": selection, "selection_seed": 0}},
        "teacher": {"config": "teacher.yml", "save_interval": 2},
        "student": {"config": "student.yml"},
        "distill": {"kl": {"terms": None}},
        "seeds": [0],
        "train": {"save_interval": 2, "log_iters": 1, "keep_checkpoint_max": 1},
        "evaluate": {"splits": ["val", "test"] if selection else ["test"]},
        "report": {"num_images": 1, "latency_runs": 1},
        "pretrained_backbones": False,
    }
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _lines(workdir, split):
    return (workdir / f"results/data/splits/{split}.txt").read_text().splitlines()


def test_a_cityscapes_study_runs_to_its_report(tmp_path):
    make_cityscapes(tmp_path / "data/set", counts={"train": 6, "val": 3})
    config = paddleseg_study(tmp_path, "Cityscapes")
    run_snakemake(tmp_path, "--cores", "2", "--configfile", config)
    train, val, test = (_lines(tmp_path, s) for s in ("train", "val", "test"))
    assert len(val) == 2 and len(train) == 4 and len(test) == 3
    assert not set(train) & set(val) and not (set(train) | set(val)) & set(test)
    assert {line.split()[0] for line in train + val} == {
        p.relative_to(tmp_path / "data/set").as_posix()
        for p in (tmp_path / "data/set/leftImg8bit/train").rglob("*.png")
    }
    for record in (tmp_path / "results/eval").rglob("*.json"):
        splits = json.loads(record.read_text())["splits"]
        assert splits["test"]["num_images"] == 3 and splits["val"]["num_images"] == 2, record
    summary = pd.read_csv(tmp_path / "results/report/summary.csv")
    assert [c for c in summary.columns if c.startswith("iou_")] == [
        f"iou_{n}" for n in sets.TYPES["Cityscapes"].class_names
    ]
    assert set(summary["split"]) == {"val", "test"}
    # The split lists enter the data digest through the validation record.
    record = json.loads((tmp_path / "results/data/validation.json").read_text())
    assert record["list_files"]["val"]["sha256"] and record["splits"] == {"train": 4, "val": 2, "test": 3}


@pytest.mark.parametrize("kind,make", [("ADE20K", make_ade20k), ("PascalVOC", make_voc)])
def test_ade20k_and_voc_through_the_data_stage_and_a_dry_run(tmp_path, kind, make):
    make(tmp_path / "data/set")
    config = paddleseg_study(tmp_path, kind, selection=0)
    proc = run_snakemake(tmp_path, "-n", "--cores", "2", "--configfile", config)
    assert job_counts(proc.stdout)["validate_data"] == 1
    run_snakemake(tmp_path, "results/data/validation.json", "results/configs/study/student.yml", "--cores", "1",
                  "--configfile", config)  # fmt: skip
    record = json.loads((tmp_path / "results/data/validation.json").read_text())
    assert record["splits"] == {"train": 6, "val": 0, "test": 3} and record["type"] == kind
    assert record["num_classes"] == len(sets.TYPES[kind].class_names)
    student = yaml.safe_load((tmp_path / "results/configs/study/student.yml").read_text())
    shift = [t for t in student["train_dataset"]["transforms"] if t["type"] == "ShiftLabels"]
    assert student["train_dataset"]["type"] == "Dataset" and bool(shift) == (kind == "ADE20K")


def _refused(tmp_path, config, target=()):
    proc = run_snakemake(tmp_path, *target, "--cores", "1", "--configfile", config, check=False)
    assert proc.returncode != 0
    assert not (tmp_path / "results/runs").exists() and not (tmp_path / "logs/train").exists()
    log = tmp_path / "logs/data/validate_data.log"
    return proc.stdout + proc.stderr + (log.read_text() if log.exists() else "")


def test_a_missing_label_is_refused_naming_the_image(tmp_path):
    make_cityscapes(tmp_path / "data/set", counts={"train": 4, "val": 2})
    label = sorted((tmp_path / "data/set/gtFine/train").rglob("*.png"))[2]
    label.unlink()
    text = _refused(tmp_path, paddleseg_study(tmp_path, "Cityscapes"))
    assert label.name.replace("_gtFine_labelTrainIds", "_leftImg8bit") in text and "has no label" in text


def test_a_label_out_of_range_is_refused_naming_the_file(tmp_path):
    make_voc(tmp_path / "data/set")
    label = sorted((tmp_path / "data/set/VOC2012/SegmentationClass").iterdir())[0]
    lab = np.asarray(Image.open(label)).copy()
    lab[5, 5] = 40
    Image.fromarray(lab).save(label)
    text = _refused(tmp_path, paddleseg_study(tmp_path, "PascalVOC"))
    assert str(label.relative_to(tmp_path)) in text and "40" in text and "0..20" in text


def test_a_teacher_on_another_data_set_is_refused_naming_both_files(tmp_path):
    make_ade20k(tmp_path / "data/set")
    make_ade20k(tmp_path / "data/other")
    text = _refused(tmp_path, paddleseg_study(tmp_path, "ADE20K", teacher_root="data/other"), ("-n",))
    assert "teacher.config teacher.yml" in text and "student.config student.yml" in text and "data/other" in text


def test_a_missing_root_is_refused_naming_the_path(tmp_path):
    text = _refused(tmp_path, paddleseg_study(tmp_path, "Cityscapes", root="data/cityscapes"), ("-n",))
    assert "dataset_root data/cityscapes does not exist" in text and "never downloads" in text
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", ["cityscapes_pp_liteseg", "cityscapes_methods"])
def test_the_cityscapes_studies_pass_the_dry_run(tmp_path, name):
    """The GPU studies as shipped, over a tiny fixture at their data/cityscapes (and a stand-in teacher file)."""
    (tmp_path / "config").symlink_to(ROOT / "config")
    make_cityscapes(tmp_path / "data/cityscapes", counts={"train": 2, "val": 1})
    weights = tmp_path / "resources/teachers/deeplabv3p_resnet101_os8_cityscapes_1024x512_80k.pdparams"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    proc = run_snakemake(tmp_path, "-n", "--cores", "2", "--configfile", ROOT / f"config/{name}.yaml")
    counts = job_counts(proc.stdout)
    arms = len(yaml.safe_load((ROOT / f"config/{name}.yaml").read_text())["distill"])
    assert counts["validate_data"] == 1 and counts["distill"] == 3 * arms and "teacher_outputs" not in counts
    if name == "cityscapes_methods":  # one arm per method of docs/methods.md, as config/methods.yaml
        arms = yaml.safe_load((ROOT / "config/cityscapes_methods.yaml").read_text())["distill"]
        assert set(arms) == set(yaml.safe_load((ROOT / "config/methods.yaml").read_text())["distill"])


def test_parsing_a_paddleseg_study_imports_no_paddle(tmp_path):
    """The parse-time reading of the YAMLs' data sets (types, roots, class names) needs neither paddle nor cv2."""
    import os
    import subprocess

    from conftest import BIN

    make_voc(tmp_path / "data/set")
    config = paddleseg_study(tmp_path, "PascalVOC")
    blocker = tmp_path / "block"
    for name in ("paddle", "paddleseg", "cv2"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} imported while parsing')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT / "src")]))
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "workflow/Snakefile"), "--directory", str(tmp_path)]
    proc = subprocess.run(
        [*cmd, "--workflow-profile", "none", "-n", "--cores", "1", "--configfile", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0 and "imported while parsing" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
