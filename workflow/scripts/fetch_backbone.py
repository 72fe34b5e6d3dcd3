from segdistill.jobs import run

run(["fetch-backbone", snakemake.params.url, "--cache", "resources/pretrained"], snakemake.log[0])
