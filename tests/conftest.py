"""Shared fixtures: the repository root, the venv's tools, and a small synthetic data set made once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY_STUDY = ROOT / "tests" / "configs" / "study_tiny.yaml"
# The tiny teacher and student every engine test trains (as strings: a spec holds paths as strings).
TEACHER = str(ROOT / "tests" / "configs" / "teacher_tiny.yml")
STUDENT = str(ROOT / "tests" / "configs" / "student_tiny.yml")


def write_records(folder, records) -> list:
    """Evaluation records as the workflow writes them, one JSON file per run in `folder`; their paths."""
    import json

    paths = []
    for r in records:
        path = Path(folder) / (r["run"].replace("/", "_") + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
        paths.append(path)
    return paths


def cache_spec(data, teacher, terms, out, config=STUDENT, **fields):
    """The teacher-outputs spec of a test: `teacher` over `config`'s stream on `data`, for the terms file `terms`."""
    from segdistill.specs import TeacherOutputsSpec

    return TeacherOutputsSpec(
        config=str(config),
        teacher_config=str(teacher),
        distill=[str(terms)],
        out=str(out),
        data_root=str(data),
        **fields,
    )


def distill_argv(data, teacher, terms, **flags) -> list[str]:
    """`segdistill train` distilling the tiny student from `teacher` with the terms file `terms`, on the data set
    `data`, evaluating; `flags`: more flags by name (their values as strings)."""
    argv = ["train", "--config", STUDENT, "--teacher_config", str(teacher), "--distill", str(terms)]
    argv += ["--data_root", str(data), "--do_eval"]
    return argv + [x for name, value in flags.items() for x in (f"--{name}", str(value))]


def tiny_spec(data, save_dir, config=STUDENT, **fields):
    """The training spec of a test run: `config` (default the tiny student) on the data set `data`, in `save_dir`."""
    from segdistill.specs import TrainSpec

    return TrainSpec(config=str(config), save_dir=str(save_dir), data_root=str(data), **fields)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """40 images of 32x32 in the OpticDiscSeg layout (train 28 / val 6 / test 6)."""
    from segdistill.data import generate

    out = tmp_path_factory.mktemp("data") / "synthetic"
    generate(out, num_images=40, size=32, seed=0)
    return out


@pytest.fixture(scope="session")
def patched_teacher(tiny_data, tmp_path_factory) -> str:
    """The tiny teacher trained for 2 iterations, and its patched config (model.pretrained = those weights)."""
    from segdistill.paddleseg_yaml import patch_teacher
    from segdistill.trainer import Trainer, TrainSpec

    teacher = str(ROOT / "tests/configs/teacher_tiny.yml")
    out = tmp_path_factory.mktemp("teacher")
    Trainer(
        TrainSpec(
            config=teacher, save_dir=str(out / "run"), data_root=str(tiny_data), iters=2, save_interval=2, do_eval=False
        )
    ).run()
    patch_teacher(teacher, out / "run/best_model/model.pdparams", out / "teacher.yml")
    return str(out / "teacher.yml")


def tiny_config(workdir: Path, **overrides) -> Path:
    """The tiny study with its config paths made absolute, written into `workdir`."""
    import yaml

    cfg = yaml.safe_load(TINY_STUDY.read_text())
    for role in ("teacher", "student"):
        cfg[role]["config"] = str(ROOT / cfg[role]["config"])
    cfg.update(overrides)
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The whole workflow run once per test session on the tiny study: (workdir, config path)."""
    workdir = tmp_path_factory.mktemp("study")
    config = tiny_config(workdir)
    run_snakemake(workdir, "--cores", "2", "--configfile", config)
    return workdir, config


def run_snakemake(workdir: Path, *args, check=True, timeout=900) -> subprocess.CompletedProcess:
    """Snakemake from the venv on the repository's workflow, with `workdir` holding results/ and logs/."""
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(ROOT / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--workflow-profile",
        "none",
        *map(str, args),
    ]
    env = dict(os.environ, SEGDISTILL_GPU_IDS="")  # no GPUs: every job runs on CPU
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def plan(workdir: Path, config, *args) -> subprocess.CompletedProcess:
    """A dry run of the whole study, whatever a finished run left in `workdir` (the repository itself, after
    `make run`): --forceall plans every job, so a plan does not depend on the checkout's results/."""
    return run_snakemake(workdir, "-n", "--forceall", "--cores", "2", "--configfile", config, *args)


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run as {rule: count}."""
    lines = output[output.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def classless_configs(folder: Path) -> dict[str, Path]:
    """The tiny teacher/student YAMLs without `model.num_classes` (a study fills it in), as a user might write
    them: {"teacher": path, "student": path} in `folder`."""
    import yaml

    out = {}
    for role in ("teacher", "student"):
        dic = yaml.safe_load((ROOT / f"tests/configs/{role}_tiny.yml").read_text())
        dic["model"].pop("num_classes")
        out[role] = folder / f"{role}.yml"
        out[role].parent.mkdir(parents=True, exist_ok=True)
        out[role].write_text(yaml.safe_dump(dic, sort_keys=False))
    return out
