# The study's copies of the user's PaddleSeg YAMLs, data set filled in. The class count check needs PaddleSeg's
# data set registry (paddle), so it runs here, before any training, instead of at parse time.
rule study_configs:
    input:
        teacher=config["teacher"]["config"],
        student=config["student"]["config"],
        # PaddleSeg's `_base_` files they inherit from: editing only a base file reruns this job too.
        bases=yaml_bases(),
    output:
        teacher=study.STUDY_CONFIGS["teacher"],
        student=study.STUDY_CONFIGS["student"],
    log:
        "logs/study_configs.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        data=JOB_CONFIG["data"],
    script:
        "../scripts/study_configs.py"


# A trained teacher the user brings (teacher.weights): fetched, checked against the teacher config, not trained.
if TEACHER_WEIGHTS:

    rule provide_teacher:
        input:
            unpack(provided_teacher_inputs),
        output:
            model="results/runs/teacher/seed{seed}/best_model/model.pdparams",
            record="results/runs/teacher/seed{seed}/provided.json",
        log:
            "logs/provide_teacher/seed{seed}.log",
        localrule: True
        conda:
            "../envs/segdistill.yaml"
        params:
            weights=TEACHER_WEIGHTS,
            sha256=config["teacher"].get("sha256"),
        script:
            "../scripts/provide_teacher.py"


# Teacher and student baseline: independent, so they run at the same time given cores/devices.
rule train:
    input:
        data=DATA_ROOT,
        validation=rules.validate_data.output[0],
        config=lambda wc: arm_config(wc.arm),
        backbones=backbone_inputs,
        # Every method's terms are checked against both models (layers, shapes, connectors) before anything
        # trains; ancient: a new method does not retrain the teacher and students.
        terms=ancient(CHECKED_TERMS),
    output:
        model="results/runs/{arm}/seed{seed}/best_model/model.pdparams",
        summary="results/runs/{arm}/seed{seed}/train_summary.json",
        train_log="results/runs/{arm}/seed{seed}/train_log.csv",
        eval_log="results/runs/{arm}/seed{seed}/eval_log.csv",
        # The best model evaluated in the job, while the engine is loaded (see rules/evaluate.smk).
        evaluation="results/eval/{arm}/seed{seed}.json",
    log:
        "logs/train/{arm}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{arm}/seed{seed}.tsv"
    wildcard_constraints:
        arm="|".join(study.trained_arms(config)),
    # The teacher is on the critical path (every distilled run waits for it): start it before the students.
    priority: lambda wc: 10 if wc.arm == "teacher" else 0
    conda:
        "../envs/segdistill.yaml"
    threads: train_threads
    resources:
        gpu=config["gpus_per_job"],
    params:
        save_dir=subpath(output.model, ancestor=2),
        train=train_flags,
        class_names=config["data"]["class_names"],
        pretrained_backbones=config["pretrained_backbones"],
        evaluate=JOB_CONFIG["evaluate"],
        # Without a selection split (data.paddleseg.selection_images 0) a run keeps its final weights.
        do_eval=study.has_selection(config),
        run=lambda wc: f"{wc.arm}/seed{wc.seed}",
    script:
        "../scripts/train.py"


# The tutorial's step 2.5, without editing the user's file: a copy whose model.pretrained is the teacher.
rule patch_teacher:
    input:
        config=arm_config("teacher"),
        weights="results/runs/teacher/seed{seed}/best_model/model.pdparams",
    output:
        "results/configs/teacher_seed{seed}.yml",
    log:
        "logs/patch_teacher/seed{seed}.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    script:
        "../scripts/patch_teacher.py"


# Both models built without weights, every method's terms probed at the study's input size: a misspelled layer
# or a missing connector stops the study here, not in a distill job after the teacher and students trained.
# It runs again only when the models change (and then everything trains again): its inputs are the two configs,
# not the methods' terms files, and what it reads of the study is unwatched (segdistill.jobs.Unwatched). A job
# that reran here would hide every other change of the study in that pass: Snakemake does not check the jobs
# downstream of a job it reruns, also through the training jobs' ancient input on this one (its issue 4166). A
# method added to a finished study is probed by its own distill job when that starts, the same checks.
rule check_terms:
    input:
        teacher=arm_config("teacher"),
        student=arm_config("student"),
    output:
        CHECKED_TERMS,
    log:
        "logs/check_terms.log",
    conda:
        "../envs/segdistill.yaml"
    threads: 1
    params:
        study=Unwatched(
            {
                "methods": {name: spec["terms"] for name, spec in METHODS.items()},
                # The teacher-output cache's size, refused over cache.max_gb before anything trains.
                "cache": (
                    dict(config["cache"], ranks=max(1, config["gpus_per_job"]))
                    if config["teacher"]["outputs"] == "cached"
                    else None
                ),
            }
        ),
    script:
        "../scripts/check_terms.py"


rule distill_terms:
    input:
        student_config=arm_config("student"),
    output:
        "results/configs/distill/{method}.yml",
    log:
        "logs/distill_terms/{method}.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        spec=lambda wc: METHODS[wc.method],
    script:
        "../scripts/distill_terms.py"


# What the teacher outputs must hold: the methods' terms reduced to their `teacher:` names. A job of its own, with
# no input, whose parameter changes only with those names (it was written when the terms check reran with every
# new method and hid a parameter change of teacher_outputs; it stays so that finished studies keep their caches).
rule teacher_terms:
    output:
        "results/configs/distill/teacher_terms.json",
    log:
        "logs/teacher_terms.log",
    localrule: True
    conda:
        "../envs/segdistill.yaml"
    params:
        terms=study.teacher_terms(config),
    script:
        "../scripts/teacher_terms.py"


# The teacher run once over a seed's training stream (the distilled runs' data seed, global batch, iterations),
# storing the union of every method's teacher tensors: one cache serves all methods and sweep points of the seed.
# One job per seed: a grown study computes the new seeds' caches only, and every other seed's distilled runs stay
# done (a job writing several seeds' caches would rewrite them all, and Snakemake would rerun every distill job).
# It takes the terms' `teacher:` names (study.teacher_terms, through the teacher_terms job), not the terms files:
# a changed weight or temperature reruns the distill jobs, not these; another teacher tensor reruns them.
rule teacher_outputs:
    input:
        unpack(distinct_table_input),
        data=DATA_ROOT,
        validation=rules.validate_data.output[0],
        config=arm_config("student"),
        teacher_config=lambda wc: f"results/configs/teacher_seed{study.teacher_seed(config, wc.seed)}.yml",
        teacher_model=lambda wc: run_model(teacher_run(wc.seed)),
        terms=rules.teacher_terms.output[0],
    output:
        directory(teacher_outputs_dir("{seed}")),
    log:
        "logs/teacher_outputs/seed{seed}.log",
    benchmark:
        "benchmarks/teacher_outputs/seed{seed}.tsv"
    conda:
        "../envs/segdistill.yaml"
    threads: config["threads"]["teacher_outputs"]
    resources:
        gpu=min(1, config["gpus_per_job"]),
    params:
        cache=JOB_CONFIG["cache"],
        ranks=max(1, config["gpus_per_job"]),
        launch_logs=lambda wc: f"logs/teacher_outputs/launch_seed{wc.seed}",
        seed=lambda wc: int(wc.seed),
        distinct=False,
    script:
        "../scripts/teacher_outputs.py"


# The teacher on every distinct training input, once for all seeds (segdistill.distill.distinct_inputs): the
# seeds' caches gather their rows from it. It depends on no seed, so a seed added later does not rerun it.
rule distinct_teacher_outputs:
    input:
        data=DATA_ROOT,
        validation=rules.validate_data.output[0],
        config=arm_config("student"),
        teacher_config=f"results/configs/teacher_seed{SEEDS[0]}.yml",
        teacher_model=run_model(teacher_run(SEEDS[0])),
        terms=rules.teacher_terms.output[0],
    output:
        directory(DISTINCT_TEACHER_OUTPUTS),
    log:
        "logs/teacher_outputs/distinct.log",
    benchmark:
        "benchmarks/teacher_outputs/distinct.tsv"
    conda:
        "../envs/segdistill.yaml"
    threads: config["threads"]["teacher_outputs"]
    resources:
        gpu=min(1, config["gpus_per_job"]),
    params:
        # The table is float32 whatever cache.dtype the seeds' caches store.
        cache={"max_gb": config["cache"]["max_gb"]},
        ranks=max(1, config["gpus_per_job"]),
        launch_logs="logs/teacher_outputs/launch_distinct",
        seed=SEEDS[0],
        distinct=True,
    script:
        "../scripts/teacher_outputs.py"


rule distill:
    input:
        unpack(teacher_outputs_input),
        data=DATA_ROOT,
        validation=rules.validate_data.output[0],
        config=arm_config("student"),
        teacher_config=lambda wc: f"results/configs/teacher_seed{study.teacher_seed(config, wc.seed)}.yml",
        teacher_model=lambda wc: run_model(teacher_run(wc.seed)),
        terms="results/configs/distill/{method}.yml",
        backbones=backbone_inputs,
    output:
        model="results/runs/distilled/{method}/seed{seed}/best_model/model.pdparams",
        summary="results/runs/distilled/{method}/seed{seed}/train_summary.json",
        train_log="results/runs/distilled/{method}/seed{seed}/train_log.csv",
        eval_log="results/runs/distilled/{method}/seed{seed}/eval_log.csv",
        evaluation="results/eval/distilled/{method}/seed{seed}.json",
    log:
        "logs/distill/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/distill/{method}/seed{seed}.tsv"
    conda:
        "../envs/segdistill.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=config["gpus_per_job"],
    params:
        save_dir=subpath(output.model, ancestor=2),
        train=JOB_CONFIG["train"],
        class_names=config["data"]["class_names"],
        pretrained_backbones=config["pretrained_backbones"],
        evaluate=JOB_CONFIG["evaluate"],
        do_eval=study.has_selection(config),
        run=lambda wc: f"distilled/{wc.method}/seed{wc.seed}",
    script:
        "../scripts/train.py"
