"""Your data, your teacher, your study: a 3-class folder data set (made here, not by segdistill) and a provided
teacher, run by a workflow deployed the way snakedeploy deploys it (a `module` pointing at this repository's
workflow, plus only a user config); and the study-file rules that need no training to check."""

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, classless_configs, job_counts, plan, run_snakemake, tiny_config
from data_helpers import make_generic_dataset

CLASSES = ["sky", "road", "car"]

DEPLOYED_SNAKEFILE = """configfile: "config/config.yaml"


module segdistill:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from segdistill
"""


def snakemake_in(folder: Path, *args, check=True):
    """Snakemake run from `folder` as a user would: its own workflow/Snakefile and config/config.yaml."""
    proc = subprocess.run(
        [str(BIN / "snakemake"), *map(str, args)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, SEGDISTILL_GPU_IDS=""),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """An empty folder with a module Snakefile, a user config, a data set and a teacher; dry run, then the run."""
    from segdistill.paddle_env import paddle

    from segdistill.paddleseg_yaml import build_model
    from segdistill.study import experiment

    d = tmp_path_factory.mktemp("deployed")
    (d / "workflow").mkdir()
    (d / "workflow/Snakefile").write_text(DEPLOYED_SNAKEFILE.format(snakefile=ROOT / "workflow/Snakefile"))
    make_generic_dataset(d / "data/mine", CLASSES, list_names={"val": "lists/val.txt"})
    teacher = classless_configs(d / "configs")["teacher"]  # YAMLs that state no class count
    data = {"source": "folder", "class_names": CLASSES, "folder": {"root": "data/mine", "val_list": "lists/val.txt"}}
    # The user's own trained teacher: any weights of the teacher's architecture for 3 classes.
    dic = experiment({"data": data, "teacher": {"config": str(teacher)}}, "teacher")
    paddle.seed(0)
    weights = d / "weights/teacher.pdparams"
    weights.parent.mkdir()
    paddle.save(build_model(dic, teacher).state_dict(), str(weights))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    study = {
        "data": data,
        "teacher": {"config": "configs/teacher.yml", "weights": "weights/teacher.pdparams", "sha256": digest},
        "student": {"config": "configs/student.yml"},
        "distill": {"kl": {"terms": None}},
        "seeds": [0, 1],
        "train": {"save_interval": 2, "log_iters": 1, "keep_checkpoint_max": 2},
        "evaluate": {"splits": ["val", "test"]},
    }
    (d / "config").mkdir()
    (d / "config/config.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    user_files = {p: p.read_bytes() for p in (d / "configs").iterdir()}
    dry = snakemake_in(d, "-n", "--cores", "2")
    snakemake_in(d, "--cores", "2")
    return d, dry.stdout + dry.stderr, digest, user_files


def test_deployed_dry_run_has_no_teacher_training(deployed):
    _, out, _, _ = deployed
    counts = job_counts(out)
    assert counts["provide_teacher"] == 1
    assert counts["train"] == 2  # the two students only
    assert counts["distill"] == 2
    assert counts["evaluate"] == 1  # the provided teacher; trained runs are evaluated in their training job
    assert "results/runs/teacher/seed0/train_summary.json" not in out


def test_folder_data_and_provided_teacher_reach_the_report(deployed):
    d, _, digest, _ = deployed
    df = pd.read_csv(d / "results/report/summary.csv")
    for name in CLASSES:
        assert f"iou_{name}" in df.columns and f"dice_{name}" in df.columns
        assert df[f"iou_{name}"].between(0, 1).all()
    assert set(df.split) == {"val", "test"}  # the generic Dataset's test split is evaluated too
    teacher = df[(df.arm == "teacher") & (df.split == "val")]
    assert len(teacher) == 1
    assert (d / "results/report/overview.html").is_file()
    record = yaml.safe_load((d / "results/runs/teacher/seed0/provided.json").read_text())
    assert record["sha256"] == digest and record["source"] == "weights/teacher.pdparams"
    assert not (d / "logs/train/teacher").exists()
    assert (d / "logs/provide_teacher/seed0.log").is_file()


def test_study_writes_its_own_paddleseg_configs(deployed):
    d, _, _, user_files = deployed
    for path, content in user_files.items():
        assert path.read_bytes() == content, f"{path} was edited"
    student = yaml.safe_load((d / "results/configs/study/student.yml").read_text())
    ds = student["val_dataset"]
    assert ds["type"] == "Dataset" and ds["num_classes"] == 3 and ds["dataset_root"] == "data/mine"
    assert ds["val_path"] == "data/mine/lists/val.txt" and ds["test_path"] == "data/mine/test_list.txt"
    assert (
        ds["transforms"]
        == yaml.safe_load((ROOT / "tests/configs/student_tiny.yml").read_text())["val_dataset"]["transforms"]
    )
    assert student["model"]["num_classes"] == 3


def test_deployed_rerun_has_nothing_to_do(deployed):
    d = deployed[0]
    proc = snakemake_in(d, "-n", "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_optic_disc_study_is_exactly_its_own(tmp_path):
    """--configfile config/optic_disc.yaml inherits nothing from config/config.yaml (no kl_cwd, no synthetic)."""
    proc = plan(ROOT, ROOT / "config/optic_disc.yaml")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts == {
        "download_optic_disc": 1,
        "extract_optic_disc": 1,
        "validate_data": 1,
        "fetch_backbone": 1,
        "study_configs": 1,
        "distill_terms": 1,
        "teacher_terms": 1,
        "check_terms": 1,
        "train": 4,
        "patch_teacher": 1,
        "distinct_teacher_outputs": 1,  # the shared teacher once over the distinct training inputs
        "teacher_outputs": 3,  # one per seed, though they share the teacher
        "distill": 3,
        "summary": 1,
        "stats": 1,
        "cost": 1,
        "export": 1,
        "figure": 5,
        "provenance": 1,
        "overview": 1,
        "all": 1,
    }
    out = proc.stdout + proc.stderr
    assert "kl_cwd" not in out and "make_synthetic" not in out
    assert out.count("results/runs/teacher/seed0/best_model/model.pdparams") >= 1
    assert "results/runs/teacher/seed1" not in out  # one shared teacher, 3 students (seeds 0, 1, 2)


def test_optic_disc_pp_liteseg_study_plans_the_tutorial_teacher_and_a_pp_liteseg_student():
    """config/optic_disc_pp_liteseg.yaml: the optic disc chain, both backbones' ImageNet weights fetched (the
    student's STDC2 archive too), the tutorial's teacher and PaddleSeg's PP-LiteSeg recipe."""
    proc = run_snakemake(ROOT, "-n", "--configfile", ROOT / "config/optic_disc_pp_liteseg.yaml", "--cores", "2")
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    assert counts["download_optic_disc"] == 1 and counts["fetch_backbone"] == 2 and "make_synthetic" not in counts
    assert counts["train"] == 4 and counts["teacher_outputs"] == 3 and counts["distill"] == 3
    assert "resources/pretrained/PP_STDCNet2/model.pdparams" in out
    inputs = re.search(r"rule study_configs:\n\s+input: (.*)", proc.stdout).group(1)
    assert "deeplabv3p_resnet50_os8_optic_disc_512x512_1k_teacher.yml" in inputs, inputs
    assert "pp_liteseg_stdc2_optic_disc_512x512_1k_student.yml" in inputs, inputs


def test_url_teacher_without_sha256_is_refused(tmp_path):
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["teacher"]["weights"] = "https://example.org/teacher.pdparams"
    config.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "-n", "--configfile", config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "teacher.sha256 is not set" in out and "pickle" in out


def test_a_misspelled_key_is_a_few_lines_naming_the_closest(tmp_path):
    """Not Snakemake's dump of the whole schema: the key path, the value, what is allowed, the closest key."""
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["teachr"] = cfg.pop("teacher")
    config.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "-n", "--configfile", config, check=False)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0
    assert len(out.splitlines()) <= 5, out[:3000]
    assert "teachr: unknown key (did you mean 'teacher'?)" in out and "Allowed at the top level: cache, data" in out


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda c: c["train"].update(precison="fp16"),
            ("train.precison: unknown key (did you mean 'precision'?). Allowed in train: amp_level, "),
        ),
        (lambda c: c["train"].update(precision="fp64"), "train.precision: 'fp64' is not allowed; allowed: fp32, fp16"),
        (lambda c: c.update(seeds=[0, "a"]), "seeds.1: 'a' is not of type integer"),
        (lambda c: c.pop("student"), "the study file: missing required key(s) student"),
        (lambda c: c["train"].update(save_interval=0), "train.save_interval: 0: 0 is less than the minimum of 1"),
    ],
)
def test_schema_problems_name_key_value_and_what_is_allowed(edit, expected):
    from segdistill.schema import problem

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    schema = ROOT / "workflow/schemas/config.schema.yaml"
    assert problem(cfg, schema) is None
    edit(cfg)
    assert expected in problem(cfg, schema)


def test_parsing_imports_no_paddle(tmp_path):
    """Dry run and lint of the default study with paddle made unimportable: parsing must not need it."""
    blocker = tmp_path / "block"
    for name in ("paddle", "paddleseg"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} imported while parsing')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT / "src")]))
    for args in (["-n", "--cores", "1"], ["--lint"]):
        proc = subprocess.run(
            [str(BIN / "snakemake"), "--workflow-profile", "none", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "imported while parsing" not in out, out[-3000:]


METHOD_ARMS = ["kl", "kl_std", "cwd", "dist", "skd", "ifvd", "cirkd", "mgd"]
METHOD_LOSSES = [
    ("kl", False),
    ("kl", True),
    ("cwd", False),
    ("dist", False),
    ("skd_pairwise", False),
    ("ifvd", False),
    ("cirkd_pixel", False),
    ("mgd", False),
]


@pytest.mark.parametrize(
    "name, distilled",
    [
        ("config.yaml", 12),
        ("kl_cwd.yaml", 16),
        ("stride8.yaml", 8),
        ("methods.yaml", 64),
        ("pp_liteseg.yaml", 8),
        ("disc_cup.yaml", 12),
    ],
)
def test_shipped_studies_parse_and_plan(name, distilled):
    """Every study in config/ is whole and plans the default study's chain (its seeds, one shared teacher)."""
    proc = plan(ROOT, ROOT / "config" / name)
    counts = job_counts(proc.stdout + proc.stderr)
    seeds = len(yaml.safe_load((ROOT / "config" / name).read_text())["seeds"])
    assert seeds == {"config.yaml": 12, "disc_cup.yaml": 12}.get(name, 8)
    assert counts["train"] == seeds + 1 and counts["teacher_outputs"] == seeds and counts["distill"] == distilled
    if name == "methods.yaml":  # one arm per method of docs/methods.md, each distilling every seed
        arms = re.findall(r"rule distill:\n(?:.*\n)*?\s+wildcards: method=(\w+), seed=\d+", proc.stdout)
        assert {a: arms.count(a) for a in set(arms)} == {a: 8 for a in METHOD_ARMS}
        study = yaml.safe_load((ROOT / "config" / name).read_text())["distill"]
        used = {
            (t["loss"], bool((t.get("options") or {}).get("standardize")))
            for arm in study.values()
            for t in arm["terms"]
        }
        assert used == set(METHOD_LOSSES)
    if name == "pp_liteseg.yaml":  # the default study's teacher, a PP-LiteSeg student
        inputs = re.search(r"rule study_configs:\n\s+input: (.*)", proc.stdout).group(1)
        assert "deeplabv3p_resnet50_os16_synthetic_64x64_teacher.yml" in inputs, inputs
        assert "pp_liteseg_stdc1_synthetic_64x64_student.yml" in inputs and "resnet18" not in inputs, inputs
    if name == "config.yaml":  # its YAMLs inherit the stride-8 ones: those are inputs too, so edits to them rerun
        inputs = re.search(r"rule study_configs:\n\s+input: (.*)", proc.stdout).group(1)
        assert "deeplabv3p_resnet18_os8_synthetic_64x64_student.yml" in inputs, inputs


def test_a_teacher_per_seed_gets_a_teacher_outputs_job_per_seed(tmp_path):
    """teacher.per_seed: true: each seed distils from its own teacher and has its own cache job (as each seed of a
    shared teacher has)."""
    study = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    study["teacher"]["per_seed"] = True
    study["seeds"] = [0, 1, 2]
    path = tmp_path / "per_seed.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    proc = plan(ROOT, path)
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    assert counts["train"] == 6 and counts["teacher_outputs"] == 3 and counts["distill"] == 3
    assert "distinct_teacher_outputs" not in counts, counts  # no teacher serves two seeds
    for seed in (0, 1, 2):
        assert f"logs/teacher_outputs/seed{seed}.log" in out
