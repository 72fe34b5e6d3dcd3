from segdistill.jobs import run

run(["extract", "--zip", snakemake.input[0], "--out", snakemake.output[0]], snakemake.log[0])
