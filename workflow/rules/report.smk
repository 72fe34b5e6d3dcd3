# The report stage: summary and statistics, model cost, the exported best student, figures, provenance, and the
# tables for `snakemake --report` (its start page shows results/report/overview.rst, see report/workflow.rst).
# `rule all` asks for the outputs of every rule here (REPORT_OUTPUTS, at the end).
from segdistill.report.figure_table import FIGURES, drawn

DISTILLED_RUNS = [r for r in RUNS if r.startswith("distilled/")]
REPORT_SPLIT = config["report"]["split"]
# The figures of this study (segdistill.report.figure_table: a sweep over one or two parameters adds its grid's).
FIGURE_PNGS = {
    f.name: f"results/report/figures/{f.name}.png" for f in drawn(config.get("sweep"))
}
PREDICT_IMAGES = config["predict"]["images"]


report: "../report/workflow.rst"


rule stats:
    input:
        evals=expand("results/eval/{run}.json", run=RUNS),
    output:
        report(
            "results/report/stats.json",
            category="Summary",
            caption="../report/stats.rst",
        ),
    log:
        "logs/report/stats.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        split=REPORT_SPLIT,
        min_effect=config["report"]["min_effect"],
    script:
        "../scripts/stats.py"


rule summary:
    input:
        evals=expand("results/eval/{run}.json", run=RUNS),
        stats=rules.stats.output[0],
    output:
        csv=report(
            "results/report/summary.csv",
            category="Summary",
            caption="../report/summary.rst",
        ),
        md=report(
            "results/report/summary.md",
            category="Summary",
            caption="../report/summary_md.rst",
        ),
    log:
        "logs/report/summary.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        runs=RUNS,
        class_names=config["data"]["class_names"],
        split=REPORT_SPLIT,
        final_weights=not study.has_selection(config),
    script:
        "../scripts/summary.py"


# Timed after every evaluation and with all cores, so no other local job runs while it measures latency.
rule cost:
    input:
        teacher_config=arm_config("teacher"),
        student_config=arm_config("student"),
        teacher_model=run_model(teacher_run(SEEDS[0])),
        student_model=run_model(f"student/seed{SEEDS[0]}"),
        evals=expand("results/eval/{run}.json", run=RUNS),
    output:
        report(
            "results/report/cost.csv",
            category="Model cost",
            caption="../report/cost.rst",
        ),
    log:
        "logs/report/cost.log",
    benchmark:
        "benchmarks/report/cost.tsv"
    conda:
        "../envs/segdistill.yaml"
    threads: workflow.cores
    resources:
        gpu=min(1, config["gpus_per_job"]),
    params:
        runs=config["report"]["latency_runs"],
        evaluate=JOB_CONFIG["evaluate"],
    script:
        "../scripts/cost.py"


rule export:
    input:
        data=DATA_ROOT,
        validation=rules.validate_data.output[0],
        evals=expand("results/eval/{run}.json", run=DISTILLED_RUNS),
        models=[run_model(r) for r in DISTILLED_RUNS],
    output:
        model=directory("results/export/best_student"),
        json=report(
            "results/export/export.json",
            category="Export",
            caption="../report/export.rst",
        ),
    log:
        "logs/report/export.log",
    benchmark:
        "benchmarks/report/export.tsv"
    conda:
        "../envs/segdistill.yaml"
    threads: 1
    params:
        split=REPORT_SPLIT,
    script:
        "../scripts/export.py"


if PREDICT_IMAGES:

    # The exported student over the user's images (predict.images), as `segdistill predict` does it by hand.
    rule predict:
        input:
            model=rules.export.output.model,
            images=PREDICT_IMAGES,
        output:
            directory("results/predict"),
        log:
            "logs/report/predict.log",
        localrule: True
        conda:
            "../envs/segdistill.yaml"
        threads: 1
        params:
            batch_size=config["evaluate"]["batch_size"],
        script:
            "../scripts/predict.py"


# What each figure argument is in this study: (the files its job waits for, the value the figure gets; plain
# strings, as a job's params are pickled).
FIGURE_ARGUMENTS = {
    "summary_csv": ([rules.summary.output.csv], str(rules.summary.output.csv)),
    "stats_json": ([rules.stats.output[0]], str(rules.stats.output[0])),
    "split": ([], REPORT_SPLIT),
    "runs": (
        [
            f"{run_dir(r)}/{log}"
            for r in TRAINED_RUNS
            for log in ("train_log.csv", "eval_log.csv")
        ],
        {r: run_dir(r) for r in TRAINED_RUNS},
    ),
    # The samples are of the exported (best) distilled run and the student of the same seed.
    "export_json": ([rules.export.output.json], str(rules.export.output.json)),
    "teacher_config": ([], arm_config("teacher")),
    "student_config": ([], arm_config("student")),
    "teacher_runs": ([], {s: teacher_run(s) for s in SEEDS}),
    "run_models": ([run_model(r) for r in RUNS], {r: run_model(r) for r in RUNS}),
    "data_root": ([DATA_ROOT, rules.validate_data.output[0]], DATA_ROOT),
    "num_images": ([], config["report"]["num_images"]),
}


# Every figure of the table (segdistill.report.figure_table) by its name.
rule figure:
    input:
        lambda wc: [
            f for a in FIGURES[wc.figure].arguments for f in FIGURE_ARGUMENTS[a][0]
        ],
    output:
        report(
            "results/report/figures/{figure}.png",
            category="Figures",
            caption="../report/figure.rst",
        ),
    log:
        "logs/report/figure_{figure}.log",
    wildcard_constraints:
        figure="|".join(FIGURE_PNGS),
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        arguments=lambda wc: {
            a: FIGURE_ARGUMENTS[a][1] for a in FIGURES[wc.figure].arguments
        },
        caption=lambda wc: FIGURES[wc.figure].caption_text(
            **{a: v for a, (_, v) in FIGURE_ARGUMENTS.items()}
        ),
    script:
        "../scripts/figure.py"


rule provenance:
    input:
        configs=[
            config["teacher"]["config"],
            config["student"]["config"],
            arm_config("teacher"),
            arm_config("student"),
        ],
        patched=expand(
            "results/configs/teacher_seed{seed}.yml",
            seed=sorted({study.teacher_seed(config, s) for s in SEEDS}),
        ),
        terms=expand("results/configs/distill/{method}.yml", method=list(METHODS)),
        # The threads of every job, and how each distilled run's teacher tensors came: cached (with the cache
        # manifest's hash) or online.
        summaries=expand("results/runs/{run}/train_summary.json", run=TRAINED_RUNS),
        # The backbone files the runs loaded: their digests (and whether a pin verified them) are recorded.
        backbones=backbone_inputs,
        results=[
            rules.summary.output.csv,
            rules.stats.output[0],
            rules.cost.output[0],
            rules.export.output.json,
        ],
    output:
        report(
            "results/report/provenance.json",
            category="Provenance",
            caption="../report/provenance.rst",
        ),
    log:
        "logs/report/provenance.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        config=JOB_CONFIG,
        configfiles=[str(f) for f in workflow.configfiles],
        repo=ENGINE_PIP if os.path.isdir(ENGINE_PIP) else None,
    script:
        "../scripts/provenance.py"


rule overview:
    input:
        summary=rules.summary.output.csv,
        stats=rules.stats.output[0],
        cost=rules.cost.output[0],
        export=rules.export.output.json,
        provenance=rules.provenance.output[0],
        figures=[png for name, png in FIGURE_PNGS.items() if FIGURES[name].overview],
    output:
        rst=report(
            "results/report/overview.rst",
            category="Summary",
            caption="../report/overview_rst.rst",
        ),
        html=report(
            "results/report/overview.html",
            category="Summary",
            caption="../report/overview.rst",
        ),
    log:
        "logs/report/overview.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    script:
        "../scripts/overview.py"


# Everything the report stage produces, for `rule all`.
REPORT_OUTPUTS = [
    *[
        str(f)
        for r in (
            rules.summary,
            rules.stats,
            rules.cost,
            rules.export,
            rules.provenance,
        )
        for f in r.output
    ],
    *[str(f) for f in rules.overview.output],
    *FIGURE_PNGS.values(),
    *([str(rules.predict.output[0])] if PREDICT_IMAGES else []),
]
