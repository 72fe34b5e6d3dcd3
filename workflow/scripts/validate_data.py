from segdistill.jobs import run

argv = ["validate-data", snakemake.input[0], "--num_classes", snakemake.params.num_classes,
        "--out", snakemake.output[0]]
if snakemake.params.archive:
    argv += ["--archive", snakemake.params.archive]
run(argv, snakemake.log[0])
