from segdistill.jobs import run

run(["summary", "--split", snakemake.params.split, "--out-csv", snakemake.output.csv,
     "--out-md", snakemake.output.md, *snakemake.input.evals], snakemake.log[0])
