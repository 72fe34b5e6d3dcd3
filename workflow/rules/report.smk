REPORT_OUTPUTS = ["results/report/summary.csv", "results/report/summary.md"]


rule summary:
    input:
        evals=expand("results/eval/{run}.json", run=RUNS),
    output:
        csv=report(
            "results/report/summary.csv",
            category="Summary",
            caption="../report/summary.rst",
        ),
        md="results/report/summary.md",
    params:
        runs=RUNS,
        class_names=config["data"]["class_names"],
        split="val",
    log:
        "logs/report/summary.log",
    script:
        "../scripts/summary.py"
