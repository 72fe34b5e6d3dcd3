import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# Modules of the engine that parsing needs; they import no paddle (a plain Snakemake environment has none).
PARSE_MODULES = (
    "__init__.py",
    "errors.py",
    "jobs.py",
    "paddleseg_yaml.py",
    "study.py",
    "schema.py",
    "recorded_keys.py",
    "paddleseg_sets.py",
    "paddleseg_classes.py",
    "precision.py",
    "report/__init__.py",
    "report/names.py",
    "report/figure_table.py",
)


def engine_source():
    """(folder to import the engine from, what `pip install` takes to install it) for this workflow's own engine.

    A local checkout (used directly or as a module) has `src/` beside `workflow/`. A workflow fetched by
    Snakemake from git (snakedeploy's `github(...)`) has no checkout: the parse-time modules come through
    Snakemake's source cache into .snakemake/, and jobs install the engine from the same repository and ref.
    """
    base = workflow.current_basedir  # this file's folder, workflow/rules
    if not hasattr(base, "ref"):  # a local folder, not a git source
        root = Path(os.fspath(base)).parents[1]
        return str(root / "src"), str(root)
    ref = base.ref
    pip = (
        f"git+file://{os.path.abspath(base.repo_path)}@{ref}"
        if hasattr(base, "repo_path")
        else f"git+https://{base.host}/{base.repo}@{ref}"
    )
    dest = Path(".snakemake", "segdistill-engine", ref, "segdistill")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PARSE_MODULES:
        cached = workflow.source_path(f"../../src/segdistill/{name}")
        (dest / name).parent.mkdir(exist_ok=True)
        tmp = (dest / name).with_name(f".{Path(name).name}.{os.getpid()}")
        tmp.write_bytes(Path(cached).read_bytes())
        os.replace(tmp, dest / name)  # concurrent parses (cluster jobs) see whole files
    return str(dest.parent), pip


ENGINE_PATH, ENGINE_PIP = engine_source()
sys.path.insert(0, ENGINE_PATH)
# The conda env's post-deploy script installs the engine from here (workflow/envs/segdistill.post-deploy.sh).
os.environ.setdefault("SEGDISTILL_SOURCE", ENGINE_PIP)

from segdistill import schema, study
from segdistill.paddleseg_yaml import base_files, is_url
from segdistill.errors import SegDistillError
from segdistill.jobs import Unwatched
from segdistill.paddleseg_sets import SPLIT_FILES

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
# One line naming the key, not Snakemake's dump of the whole schema; validate() then fills in the defaults.
_problem = schema.problem(config, SCHEMA)
if _problem:
    sys.exit(f"segdistill: error in the study config: {_problem}")
validate(config, SCHEMA)
try:
    study.fill_class_names(config)
    study.preflight(config)
    METHODS = study.methods(config)
except SegDistillError as exc:
    sys.exit(f"segdistill: error in the study config: {exc}")
# What the jobs' params carry of the study: a key added to the schema later is left out at its default, so a
# study finished before it existed keeps every job done (segdistill.schema.job_view).
JOB_CONFIG = schema.job_view(config, SCHEMA)

DATA_ROOT = study.data_root(config)
DATA_ARCHIVE = study.data_archive(config)
SEEDS = config["seeds"]
RUNS = study.runs(config)
TEACHER_WEIGHTS = study.teacher_weights(config)
# Runs the workflow trains (a given teacher is evaluated, not trained: it has no training logs).
TRAINED_RUNS = [r for r in RUNS if not (TEACHER_WEIGHTS and r.startswith("teacher/"))]
CHECKED_TERMS = "results/configs/distill/checked.json"
BACKBONES = {
    url: str(study.pretrained_path(url)) for url in study.backbone_urls(config)
}


wildcard_constraints:
    seed=r"\d+",
    arm="teacher|student",
    method=study.METHOD_PATTERN,
    run=study.RUN_PATTERN,


def teacher_outputs_dir(seed):
    return f"results/teacher_outputs/seed{seed}"


def teacher_outputs_input(wildcards):
    """A seed's cached teacher outputs (teacher.outputs: cached); nothing when the teacher runs online."""
    if config["teacher"]["outputs"] != "cached":
        return {}
    return {"teacher_outputs": teacher_outputs_dir(wildcards.seed)}


DISTINCT_TEACHER_OUTPUTS = "results/teacher_outputs/distinct"


def distinct_table_input(wildcards):
    """The table a seed's cache gathers from (study.distinct_teacher_outputs), or nothing."""
    if not study.distinct_teacher_outputs(config):
        return {}
    return {"shared": DISTINCT_TEACHER_OUTPUTS}


def run_dir(run):
    return f"results/runs/{run}"


def yaml_bases():
    """The `_base_` files the teacher and student YAMLs inherit from (inputs of study_configs)."""
    return [
        p for arm in ("teacher", "student") for p in base_files(config[arm]["config"])
    ]


def arm_config(arm):
    """The study's copy of the arm's PaddleSeg YAML (data set filled in, see study.experiment)."""
    return study.STUDY_CONFIGS["teacher" if arm == "teacher" else "student"]


def train_flags(wildcards):
    return study.train_flags(JOB_CONFIG, wildcards.arm)


def train_threads(wildcards):
    """The `train` rule's threads: the teacher's own count, the students' that of every student job (study key
    `threads`; Snakemake caps both at --cores)."""
    return config["threads"]["teacher" if wildcards.arm == "teacher" else "train"]


def teacher_run(seed):
    return f"teacher/seed{study.teacher_seed(config, seed)}"


def backbone_inputs(wildcards):
    """Cached backbones the configs point at by URL (empty when pretrained_backbones is false)."""
    return list(BACKBONES.values())


def backbone_url(name):
    """The `pretrained:` URL cached under resources/pretrained/<name>/."""
    return next(
        u for u, p in BACKBONES.items() if p.startswith(f"resources/pretrained/{name}/")
    )


def run_model(run):
    return f"{run_dir(run)}/best_model/model.pdparams"


def provided_teacher_inputs(wildcards):
    """The teacher config; and the user's weights file when it is local, so that a new file reruns the check."""
    local = {} if is_url(TEACHER_WEIGHTS) else {"weights": TEACHER_WEIGHTS}
    return {"config": arm_config("teacher"), **local}


def eval_inputs(wildcards):
    info = study.parse_run(wildcards.run)
    return {
        "model": run_model(wildcards.run),
        "config": arm_config(info["arm"]),
        "validation": rules.validate_data.output[0],
        "data": DATA_ROOT,
    }
