import sys

from snakemake.utils import min_version, validate

from segdistill import study
from segdistill.errors import SegDistillError

min_version("9.0")


validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    study.check(config)
    METHODS = study.methods(config)
except SegDistillError as exc:
    sys.exit(f"segdistill: error in the study config: {exc}")

DATA_ROOT = study.data_root(config)
SEEDS = config["seeds"]
RUNS = study.runs(config)
BACKBONES = {
    url: str(study.pretrained_path(url)) for url in study.backbone_urls(config)
}


wildcard_constraints:
    seed=r"\d+",
    arm="teacher|student",
    method=r"[A-Za-z0-9_.=~-]+",
    run=r"(teacher|student)/seed\d+|distilled/[A-Za-z0-9_.=~-]+/seed\d+",


localrules:
    all,
    download_optic_disc,
    make_synthetic,
    patch_teacher,
    distill_terms,
    summary,


def run_dir(run):
    return f"results/runs/{run}"


def arm_config(arm):
    return config["teacher" if arm == "teacher" else "student"]["config"]


def teacher_run(seed):
    return f"teacher/seed{study.teacher_seed(config, seed)}"


def backbone_inputs(wildcards):
    """Cached backbones the configs point at by URL (empty when pretrained_backbones is false)."""
    return list(BACKBONES.values())


def run_model(run):
    return f"{run_dir(run)}/best_model/model.pdparams"


def eval_inputs(wildcards):
    info = study.parse_run(wildcards.run)
    return {
        "model": run_model(wildcards.run),
        "config": arm_config(info["arm"]),
        "validation": rules.validate_data.output[0],
        "data": DATA_ROOT,
    }


def report_outputs():
    """Everything the report stage (report.smk) produces: the outputs of its rules, for `rule all`."""
    report_rules = [
        rules.summary,
        rules.stats,
        rules.cost,
        rules.export,
        rules.figure_bars,
        rules.figure_curves,
        rules.figure_samples,
        rules.provenance,
        rules.overview,
    ]
    return [str(f) for r in report_rules for f in r.output]
