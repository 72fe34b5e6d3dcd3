from segdistill.jobs import run

run(["stats", *snakemake.input.evals, "--split", snakemake.params.split, "--out", snakemake.output[0]],
    snakemake.log[0])
