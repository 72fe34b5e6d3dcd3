# The report stage: summary and statistics, model cost, the exported best student, figures, provenance, and the
# tables for `snakemake --report` (its start page shows results/report/overview.rst, see report/workflow.rst).
# `rule all` asks for the outputs of every rule here (report_outputs() in common.smk).
DISTILLED_RUNS = [r for r in RUNS if r.startswith("distilled/")]
REPORT_SPLIT = config["report"]["split"]
# A sweep over one or two parameters gets a figure of the gain over its grid.
SWEEP_FIGURE = bool(config.get("sweep")) and len(config["sweep"]["grid"]) <= 2


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
        evaluate=config["evaluate"],
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
        tol=1e-4,
        split=REPORT_SPLIT,
    script:
        "../scripts/export.py"


rule figure_means:
    input:
        rules.summary.output.csv,
    output:
        report(
            "results/report/figures/arm_means.png",
            category="Figures",
            caption="../report/arm_means.rst",
        ),
    log:
        "logs/report/figure_means.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        split=REPORT_SPLIT,
    script:
        "../scripts/figure_means.py"


rule figure_paired:
    input:
        rules.summary.output.csv,
    output:
        report(
            "results/report/figures/paired.png",
            category="Figures",
            caption="../report/paired.rst",
        ),
    log:
        "logs/report/figure_paired.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        split=REPORT_SPLIT,
    script:
        "../scripts/figure_paired.py"


rule figure_forest:
    input:
        rules.stats.output[0],
    output:
        report(
            "results/report/figures/forest.png",
            category="Figures",
            caption="../report/forest.rst",
        ),
    log:
        "logs/report/figure_forest.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    script:
        "../scripts/figure_forest.py"


if SWEEP_FIGURE:

    rule figure_sweep:
        input:
            rules.stats.output[0],
        output:
            report(
                "results/report/figures/sweep.png",
                category="Figures",
                caption="../report/sweep.rst",
            ),
        log:
            "logs/report/figure_sweep.log",
        localrule: True
        conda:
            "../envs/segdistill.yaml"
        script:
            "../scripts/figure_sweep.py"


rule figure_curves:
    input:
        train_logs=[f"{run_dir(r)}/train_log.csv" for r in TRAINED_RUNS],
        eval_logs=[f"{run_dir(r)}/eval_log.csv" for r in TRAINED_RUNS],
    output:
        report(
            "results/report/figures/curves.png",
            category="Figures",
            caption="../report/curves.rst",
        ),
    log:
        "logs/report/figure_curves.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        runs={r: run_dir(r) for r in TRAINED_RUNS},
    script:
        "../scripts/figure_curves.py"


# Teacher | student | distilled for the exported (best) distilled run and the student of the same seed.
rule figure_samples:
    input:
        data=DATA_ROOT,
        validation=rules.validate_data.output[0],
        export=rules.export.output.json,
        models=[run_model(r) for r in RUNS],
    output:
        report(
            "results/report/figures/samples.png",
            category="Figures",
            caption="../report/samples.rst",
        ),
    log:
        "logs/report/figure_samples.log",
    benchmark:
        "benchmarks/report/figure_samples.tsv"
    conda:
        "../envs/segdistill.yaml"
    threads: 1
    params:
        num_images=config["report"]["num_images"],
        teacher_config=arm_config("teacher"),
        student_config=arm_config("student"),
        teacher_runs={s: teacher_run(s) for s in SEEDS},
        run_models={r: run_model(r) for r in RUNS},
        split=REPORT_SPLIT,
    script:
        "../scripts/figure_samples.py"


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
        config=config,
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
        paired=rules.figure_paired.output[0],
        means=rules.figure_means.output[0],
        forest=rules.figure_forest.output[0],
        sweep=rules.figure_sweep.output[0] if SWEEP_FIGURE else [],
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
