rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        "results/eval/{run}.json",
    params:
        splits=config["evaluate"]["splits"],
        class_names=config["data"]["class_names"],
        data_root=DATA_ROOT,
    threads: 1
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    script:
        "../scripts/evaluate.py"
