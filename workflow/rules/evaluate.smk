# Trained runs are evaluated in their training job (rules/train.smk: the `evaluation` output). A teacher the user
# brings (teacher.weights) was not trained here, so it has its own evaluate job.
if TEACHER_WEIGHTS:

    rule evaluate:
        input:
            unpack(eval_inputs),
        output:
            "results/eval/{run}.json",
        log:
            "logs/evaluate/{run}.log",
        benchmark:
            "benchmarks/evaluate/{run}.tsv"
        wildcard_constraints:
            run=r"teacher/seed\d+",
        conda:
            "../envs/segdistill.yaml"
        threads: 1
        params:
            evaluate=JOB_CONFIG["evaluate"],
            class_names=config["data"]["class_names"],
        script:
            "../scripts/evaluate.py"
