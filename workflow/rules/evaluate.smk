rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        "results/eval/{run}.json",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    conda:
        "../envs/segdistill.yaml"
    threads: 1
    params:
        splits=config["evaluate"]["splits"],
        class_names=config["data"]["class_names"],
    script:
        "../scripts/evaluate.py"
