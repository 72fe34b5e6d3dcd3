from segdistill.jobs import run

run(["patch-teacher", "--config", snakemake.input.config, "--weights", snakemake.input.weights,
     "--out", snakemake.output[0]], snakemake.log[0])
