"""CPU threads: a command run by hand uses the cores it may run on (--threads, then OMP_NUM_THREADS, then its CPU
affinity), set before paddle is imported; the study's `threads` key reaches the rules' threads and SLURM's
cpus_per_task; a run records its count and resumes only at the count it started with."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, plan, run_snakemake, tiny_config
from segdistill import threads
from segdistill.errors import SegDistillError
from segdistill.schema import problem

CLI = [sys.executable, "-m", "segdistill.cli"]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
CORES = len(os.sched_getaffinity(0))


def clean_env(**extra) -> dict:
    """This environment without the thread variables: the test process imported paddle, which set
    OMP_NUM_THREADS=1 here, and a child would take that for the user's choice."""
    env = {k: v for k, v in os.environ.items() if k not in threads.VARS}
    return {**env, **extra}


def test_the_count_comes_from_the_flag_then_the_variable_then_the_affinity():
    assert threads.choose(3, {"OMP_NUM_THREADS": "5"}) == (3, "--threads")
    assert threads.choose(None, {"OMP_NUM_THREADS": " 5 "}) == (5, "OMP_NUM_THREADS")
    assert threads.choose(None, {"OMP_NUM_THREADS": ""})[0] == CORES
    assert threads.choose(None, {}) == (CORES, "the cores available to this process")
    for bad in ("0", "two", "4,2"):
        with pytest.raises(SegDistillError, match=f"OMP_NUM_THREADS must be a whole number >= 1, got '{bad}'"):
            threads.choose(None, {"OMP_NUM_THREADS": bad})
    with pytest.raises(SegDistillError, match="--threads must be a whole number >= 1, got 0"):
        threads.choose(0, {})


def doctor_threads(*args, env, affinity=None) -> str:
    """`segdistill doctor`'s device line in a fresh process: what paddle computes with there."""
    pre = (lambda: os.sched_setaffinity(0, affinity)) if affinity else None
    proc = subprocess.run([*CLI, "doctor", *args], capture_output=True, text=True, env=env, preexec_fn=pre, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("device now:"))
    assert "OMP_NUM_THREADS WISELY" not in proc.stderr  # paddle's import-time warning is dropped
    return re.search(r"\((\d+ threads?)\)", line).group(1)


def test_a_hand_run_command_uses_the_cores_it_may_run_on():
    assert doctor_threads(env=clean_env()) == threads.describe(CORES)
    # A narrower affinity (taskset, a container's cpuset) is what counts, not the machine's core count.
    assert doctor_threads(env=clean_env(), affinity={sorted(os.sched_getaffinity(0))[0]}) == "1 thread"


def test_omp_num_threads_is_respected_and_the_flag_overrides_it():
    assert doctor_threads(env=clean_env(OMP_NUM_THREADS="3")) == "3 threads"
    assert doctor_threads("--threads", "2", env=clean_env(OMP_NUM_THREADS="3")) == "2 threads"
    proc = subprocess.run(
        [*CLI, "doctor"], capture_output=True, text=True, env=clean_env(OMP_NUM_THREADS="many"), timeout=300
    )
    assert proc.returncode == 2 and "OMP_NUM_THREADS must be a whole number >= 1, got 'many'" in proc.stderr


def test_a_run_records_its_count_and_resumes_only_at_that_count(tiny_data, tmp_path):
    """`segdistill train` states the count on its device line and in train_summary.json; checkpoints of a run at
    2 threads are not resumed at 1 (the rounding differs), the run trains from iteration 0."""
    args = [
        *CLI,
        "train",
        "--config",
        str(ROOT / "tests/configs/student_tiny.yml"),
        "--data_root",
        str(tiny_data),
        "--save_dir",
        str(tmp_path / "run"),
        "--iters",
        "4",
        "--save_interval",
        "2",
    ]
    killed = subprocess.run(
        [*args, "--threads", "2"], capture_output=True, text=True, env=clean_env(SEGDISTILL_DIE_AFTER_ITER="2")
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert "device: cpu (2 threads)" in killed.stderr
    again = subprocess.run([*args, "--threads", "1"], capture_output=True, text=True, env=clean_env())
    assert again.returncode == 0, again.stderr[-2000:]
    assert "device: cpu (1 thread)" in again.stderr
    assert "are of another run" in again.stderr and "resumed from" not in again.stderr
    assert json.loads((tmp_path / "run/train_summary.json").read_text())["threads"] == 1


def test_the_study_key_is_checked():
    base = {"teacher": {"config": "t.yml"}, "student": {"config": "s.yml"}, "distill": {"kl": {"terms": None}}}
    assert problem(dict(base, threads={"teacher": 4, "teacher_outputs": 2, "train": 1}), SCHEMA) is None
    assert "threads.teacher: 0" in problem(dict(base, threads={"teacher": 0}), SCHEMA)
    assert "threads.train: 1.5 is not of type integer" in problem(dict(base, threads={"train": 1.5}), SCHEMA)
    assert "threads.teachr: unknown key (did you mean 'teacher'?)" in problem(dict(base, threads={"teachr": 2}), SCHEMA)


def job_threads(output: str) -> dict:
    """{(rule, wildcards): (threads, cpus_per_task or None)} of a dry run's job listing (threads 1 is not shown)."""
    out = {}
    for block in output.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        n = re.search(r"^\s+threads: (\d+)$", block, re.M)
        cpus = re.search(r"cpus_per_task=(\d+)", block)
        key = (rule, wildcards.group(1) if wildcards else "")
        out[key] = (int(n.group(1)) if n else 1, int(cpus.group(1)) if cpus else None)
    return out


def test_the_study_key_reaches_the_rules_capped_at_the_cores(tmp_path):
    config = tiny_config(tmp_path, threads={"teacher": 3, "teacher_outputs": 2})
    jobs = job_threads(plan(tmp_path, config).stdout)  # --cores 2
    assert jobs[("train", "arm=teacher, seed=0")][0] == 2  # 3 asked, --cores 2: Snakemake lowers it
    assert jobs[("teacher_outputs", "seed=0")][0] == 2 and jobs[("teacher_outputs", "seed=1")][0] == 2
    assert jobs[("train", "arm=student, seed=1")][0] == 1 and jobs[("distill", "method=kl, seed=0")][0] == 1
    default = job_threads(plan(tmp_path, tiny_config(tmp_path)).stdout)
    assert {k: v for k, v in default.items() if k[0] in ("train", "teacher_outputs", "distill")} == {
        k: (1, None) for k in default if k[0] in ("train", "teacher_outputs", "distill")
    }


def test_the_study_key_is_cpus_per_task_on_slurm(tmp_path):
    """The SLURM profile's dry run: each job's cpus_per_task is its threads from the study (the profile's
    `cores: 8` caps them, as --cores does)."""
    config = tiny_config(tmp_path, threads={"teacher": 4, "teacher_outputs": 12, "train": 2})
    profile = str(ROOT / "workflow/profiles/slurm")
    proc = run_snakemake(tmp_path, "-n", "--forceall", "--configfile", config, "--workflow-profile", profile)
    jobs = job_threads(proc.stdout)
    assert jobs[("train", "arm=teacher, seed=0")] == (4, 4)
    assert jobs[("teacher_outputs", "seed=0")] == (8, 8)
    assert jobs[("train", "arm=student, seed=0")] == (2, 2) and jobs[("distill", "method=kl_cwd, seed=1")] == (2, 2)


def test_the_count_enters_the_run_key_only_when_not_1():
    from segdistill.specs import TrainSpec
    from segdistill.trainer import run_key

    spec = TrainSpec(config="s.yml", save_dir="run")
    kw = dict(experiment={"iters": 3}, train_data="cd" * 32, val_files=None, world=1, distill=None)
    assert run_key(spec, **kw, threads=1) == run_key(spec, **kw)  # keys of earlier runs (tests/test_run_key.py)
    assert len({run_key(spec, **kw, threads=n) for n in (1, 2, 4)}) == 3
